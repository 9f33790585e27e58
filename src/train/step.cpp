#include "train/step.h"

#include "distributed/dist.h"
#include "optim/fused_adamw.h"
#include "util/autocast.h"
#include "util/cpu_allocator.h"
#include "util/device.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/optim/adamw.h>

#include <chrono>
#include <functional>
#include <malloc.h>

namespace torchclip {
namespace {

using Clock = std::chrono::steady_clock;

bool decay_exempt(const std::string& name, const at::Tensor& p) {
  auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  return p.dim() < 2 || has("bn") || has("ln") || has("bias") || has("logit_scale");
}

/// Seconds since `t`; with `sync`, after waiting for `device` (exact phase times on a GPU).
double seconds_since(Clock::time_point t, const at::Device& device, bool sync) {
  if (sync) synchronize(device);
  return std::chrono::duration<double>(Clock::now() - t).count();
}

/// Bytes malloc has handed out and not had back, less the caching CPU allocator's idle blocks.
int64_t heap_in_use_bytes() {
  const struct mallinfo2 m = ::mallinfo2();
  int64_t bytes = static_cast<int64_t>(m.uordblks + m.hblkhd);
  if (auto* cache = installed_cpu_caching_allocator()) bytes -= static_cast<int64_t>(cache->stats().cached_bytes);
  return bytes;
}

}  // namespace

ParamGroupNames param_group_names(CLIP& model) {
  ParamGroupNames g;
  for (const auto& p : model->named_parameters()) (decay_exempt(p.key(), p.value()) ? g.no_decay : g.decay).push_back(p.key());
  return g;
}

std::vector<torch::optim::OptimizerParamGroup> param_groups(CLIP& model, const OptimCfg& o) {
  std::vector<at::Tensor> decay, no_decay;
  for (const auto& p : model->named_parameters()) (decay_exempt(p.key(), p.value()) ? no_decay : decay).push_back(p.value());
  auto opts = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(o.lr()).betas({o.betas()[0], o.betas()[1]}).eps(o.eps()).weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, opts(o.weight_decay()));
  groups.emplace_back(no_decay, opts(0.0));
  return groups;
}

TrainStep::TrainStep(CLIP model, ContrastiveLoss loss, torch::optim::Optimizer& optimizer, StepOptions options)
    : model_(std::move(model)), loss_(std::move(loss)), optimizer_(optimizer), options_(std::move(options)) {
  params_ = model_->parameters();
  for (const auto& p : params_) shapes_.push_back(p.sizes().vec());
  const auto& group = options_.group();
  if (group) owner_id_ = group->rank();
  if (options_.pipeline_stages() > 1) {
    TORCH_CHECK(group && group->world_size() % options_.pipeline_stages() == 0, "a pipeline of ",
                options_.pipeline_stages(), " stages needs a group whose size is a multiple of it");
    TORCH_CHECK(options_.shard() == Shard::kNone && options_.towers() == Towers::kTogether,
                "a pipeline takes dist.shard: none and dist.towers: together");
    PipelinePlace& pp = pipe_;
    pp.stages = options_.pipeline_stages();
    pp.stage = group->rank() % pp.stages;
    pp.replicas = group->world_size() / pp.stages;
    pp.replica = group->rank() / pp.stages;
    pp.micro_batches = options_.micro_batches();
    // Stage s runs blocks [s n / S, (s + 1) n / S): runs of about equal length.
    const int64_t n = model_->image_block_count();
    TORCH_CHECK(pp.stages <= n, "a pipeline of ", pp.stages, " stages, but the image tower has ", n, " blocks");
    auto first_block = [&](int64_t stage) { return stage * n / pp.stages; };
    pp.begin = first_block(pp.stage);
    pp.end = first_block(pp.stage + 1);
    auto stage_of = [&](const std::string& name) {
      const auto part = model_->image_part(name);
      if (!part) return pp.stages - 1;  // the text tower, logit_scale, logit_bias
      if (*part < 0) return int64_t{0};  // the stem
      int64_t stage = 0;
      while (stage + 1 < pp.stages && first_block(stage + 1) <= *part) ++stage;  // the head: the last
      return stage;
    };
    owner_id_ = pp.stage;
    for (const auto& p : model_->named_parameters()) owners_.push_back(stage_of(p.key()));
    for (const auto& b : model_->named_buffers()) {
      if (!model_->image_part(b.key())) continue;
      buffers_.push_back(b.value());
      buffer_owners_.push_back(stage_of(b.key()));
    }
    if (pp.replicas > 1) {
      std::vector<int64_t> ranks;
      for (int64_t d = 0; d < pp.replicas; ++d) ranks.push_back(d * pp.stages + pp.stage);
      replica_group_ = group->new_group(ranks, fmt::format("pipeline-stage-{}", pp.stage));
      averager_ = std::make_unique<dist::GradientAverager>(replica_group_, owned_parameters(),
                                                           dist::AveragerOptions().bucket_bytes(options_.bucket_bytes()));
    }
  } else if (options_.towers() == Towers::kSplit) {
    TORCH_CHECK(group && group->world_size() == 2, "dist.towers: split needs a group of exactly 2 ranks");
    split_ = true;
    // Rank 0: the image tower and the logit scale and bias; rank 1: everything else (the text
    // tower, at the root or under "text.").
    for (const auto& p : model_->named_parameters()) {
      const std::string& n = p.key();
      owners_.push_back(n.rfind("visual.", 0) == 0 || n == "logit_scale" || n == "logit_bias" ? 0 : 1);
    }
  } else if (group) {
    auto o = dist::AveragerOptions().bucket_bytes(options_.bucket_bytes());
    if (options_.shard() != Shard::kNone) {
      owners_ = dist::partition_parameters(params_, group->world_size());
      o.owners(owners_).reduce_to_owner(options_.shard() == Shard::kGradients);
    }
    averager_ = std::make_unique<dist::GradientAverager>(group, params_, o);
  }
}

bool TrainStep::owns(size_t k) const { return owners_.empty() || owners_[k] == owner_id_; }

bool TrainStep::owns_parameter(const at::Tensor& param) const {
  for (size_t k = 0; k < params_.size(); ++k)
    if (params_[k].unsafeGetTensorImpl() == param.unsafeGetTensorImpl()) return owns(k);
  return true;
}

at::Tensor TrainStep::logit_scale() const {
  const at::Tensor& p = model_->logit_scale;
  for (size_t k = 0; k < params_.size() && !owners_.empty(); ++k) {
    if (params_[k].unsafeGetTensorImpl() != p.unsafeGetTensorImpl() || owners_[k] == 0) continue;
    auto& group = *options_.group();
    at::Tensor value = group.rank() == owners_[k] ? p.detach().clone() : at::empty(shapes_[k], p.options());
    group.broadcast_async(value, owners_[k]).wait();
    return value;
  }
  return p.detach();
}

std::vector<at::Tensor> TrainStep::owned_parameters() const {
  std::vector<at::Tensor> out;
  for (size_t k = 0; k < params_.size(); ++k)
    if (owns(k)) out.push_back(params_[k]);
  return out;
}

int64_t TrainStep::parameter_bytes() const {
  int64_t bytes = 0;
  for (const auto& p : params_) bytes += static_cast<int64_t>(p.nbytes());
  return bytes;
}

void TrainStep::gather_parameters() {
  if (!places_parameters()) return;
  at::NoGradGuard no_grad;
  auto& group = *options_.group();
  // owners_[k] is also the rank that sends parameter k: rank 1 under split towers, stage s's
  // rank in replica 0 (rank s) in a pipeline. Every rank takes part in each broadcast.
  for (size_t k = 0; k < params_.size(); ++k) {
    if (owners_[k] == 0) continue;
    at::Tensor p = params_[k];
    if (group.rank() == 0) p.set_data(at::empty(shapes_[k], p.options()));
    at::Tensor buffer = group.rank() == 0 || owners_[k] == group.rank() ? p.detach() : at::empty(shapes_[k], p.options());
    group.broadcast_async(buffer, owners_[k]).wait();
  }
  // The other stages' buffers (BatchNorm statistics), which each rank keeps whole but only their
  // stage updates.
  for (size_t k = 0; k < buffers_.size(); ++k) {
    if (buffer_owners_[k] == 0) continue;
    at::Tensor b = group.rank() == 0 || buffer_owners_[k] == group.rank() ? buffers_[k] : at::empty_like(buffers_[k]);
    group.broadcast_async(b, buffer_owners_[k]).wait();
  }
}

void TrainStep::release_unowned_parameters() {
  if (!places_parameters()) return;
  for (size_t k = 0; k < params_.size(); ++k)
    if (!owns(k)) params_[k].set_data(at::empty({0}, params_[k].options()));
}

int64_t TrainStep::optimizer_state_bytes() const {
  int64_t bytes = 0;
  auto add = [&](const at::Tensor& t) {
    if (t.defined()) bytes += static_cast<int64_t>(t.nbytes());
  };
  for (const auto& [impl, slot] : optimizer_.state()) {
    if (const auto* s = dynamic_cast<const torch::optim::AdamWParamState*>(slot.get())) {
      add(s->exp_avg());
      add(s->exp_avg_sq());
      add(s->max_exp_avg_sq());
    }
  }
  return bytes;
}

void TrainStep::gather_optimizer_state() {
  if (!sharded()) return;
  at::NoGradGuard no_grad;
  if (auto* fused = dynamic_cast<FusedAdamW*>(&optimizer_)) fused->sync_state();  // owners' step counts to the host
  auto& group = *options_.group();
  auto& state = optimizer_.state();
  const bool root = group.rank() == 0;
  // One all-reduce tells every rank which parameters have state and their step counts (each
  // owner fills its rows); then each owner's moments go out a parameter at a time, so the
  // transient memory is one parameter's state. Rank 0 keeps them on the host: they are only
  // written to the checkpoint, and a device that needs ZeRO may not fit them all.
  const auto on_device = at::TensorOptions().dtype(at::kDouble).device(params_[0].device());
  at::Tensor header = at::zeros({static_cast<int64_t>(params_.size()), 2}, on_device);  // [P, (has state, step)]
  {
    std::vector<double> rows(params_.size() * 2, 0.0);
    for (size_t k = 0; k < params_.size(); ++k) {
      if (owners_[k] != group.rank()) continue;  // a pipeline's other replicas hold copies
      auto it = state.find(params_[k].unsafeGetTensorImpl());
      if (it == state.end()) continue;
      rows[2 * k] = 1;
      rows[2 * k + 1] = static_cast<double>(static_cast<torch::optim::AdamWParamState&>(*it->second).step());
    }
    header.copy_(at::tensor(rows, at::kDouble).view({-1, 2}));
    std::vector<at::Tensor> v{header};
    group.all_reduce_sum(v);
  }
  const at::Tensor header_host = header.cpu();
  const auto h = header_host.accessor<double, 2>();  // [P, 2]
  for (size_t k = 0; k < params_.size(); ++k) {
    const int64_t owner = owners_[k];
    if (owner == 0 || h[k][0] == 0) continue;  // rank 0's own, or no state yet
    const at::Tensor& p = params_[k];
    const int64_t numel = c10::multiply_integers(shapes_[k]);
    torch::optim::AdamWParamState* s = nullptr;
    if (owner == group.rank()) s = static_cast<torch::optim::AdamWParamState*>(state.at(p.unsafeGetTensorImpl()).get());
    at::Tensor moments = s ? at::stack({s->exp_avg().reshape({-1}), s->exp_avg_sq().reshape({-1})})
                           : at::empty({2, numel}, p.options());  // [2, numel]
    group.broadcast_async(moments, owner).wait();
    if (!root) continue;
    auto received = std::make_unique<torch::optim::AdamWParamState>();
    received->exp_avg(moments[0].view(shapes_[k]).to(at::kCPU, /*non_blocking=*/false, /*copy=*/true));
    received->exp_avg_sq(moments[1].view(shapes_[k]).to(at::kCPU, /*non_blocking=*/false, /*copy=*/true));
    received->step(static_cast<int64_t>(h[k][1]));
    state[p.unsafeGetTensorImpl()] = std::move(received);
  }
}

void TrainStep::release_unowned_state() {
  if (!sharded()) return;
  auto* fused = dynamic_cast<FusedAdamW*>(&optimizer_);
  for (size_t k = 0; k < params_.size(); ++k) {
    if (owns(k)) continue;
    if (fused) fused->drop_state(params_[k]);
    else optimizer_.state().erase(params_[k].unsafeGetTensorImpl());
  }
}

TrainStep::~TrainStep() = default;

StepResult TrainStep::run(const std::vector<MicroBatch>& micro, double lr, bool stop_requested) {
  TORCH_CHECK(!micro.empty(), "train step: no micro-batch");
  StepResult r;
  const bool bf16 = options_.precision() == Precision::kBf16;
  const at::DeviceType device = micro[0].images.device().type();
  auto since = [&](Clock::time_point t) { return seconds_since(t, micro[0].images.device(), options_.time_phases()); };
  for (auto& g : optimizer_.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
  optimizer_.zero_grad();

  // Forward and backward. One micro-batch: the plain step. Several: OpenCLIP's accumulation,
  // features of every micro-batch without gradient first, so each micro-batch's loss compares
  // it against the whole accumulated batch.
  const size_t n = micro.size();
  const int64_t heap_before = measure_activations_ ? heap_in_use_bytes() : 0;
  auto measure = [&] {  // right before the first backward
    if (measure_activations_ && r.activation_bytes < 0 && device == at::kCPU)
      r.activation_bytes = heap_in_use_bytes() - heap_before;
  };
  at::Tensor loss;
  if (places_parameters()) {
    TORCH_CHECK(n == 1, "split towers and pipelines take one batch per step (pipelines cut it themselves), got ", n);
    loss = split_ ? split_forward_backward(micro[0], r, measure) : pipeline_forward_backward(micro[0], r, measure);
  }
  std::vector<at::Tensor> cached_img(n), cached_txt(n);  // each [B, E] float
  if (n > 1) {
    const auto t0 = Clock::now();
    torch::NoGradGuard no_grad;
    AutocastGuard autocast(device, bf16);
    for (size_t j = 0; j < n; ++j) {
      auto o = model_->forward(micro[j].images, micro[j].texts);
      cached_img[j] = o.image_features.to(at::kFloat);
      cached_txt[j] = o.text_features.to(at::kFloat);
    }
    r.forward_seconds += since(t0);
  }
  for (size_t j = 0; j < (places_parameters() ? 0 : n); ++j) {
    const auto t0 = Clock::now();
    LossInput in;
    {
      AutocastGuard autocast(device, bf16);
      auto o = model_->forward(micro[j].images, micro[j].texts);
      auto imgs = cached_img, txts = cached_txt;
      imgs[j] = o.image_features.to(at::kFloat);
      txts[j] = o.text_features.to(at::kFloat);
      in = {n == 1 ? imgs[0] : at::cat(imgs), n == 1 ? txts[0] : at::cat(txts), o.logit_scale, o.logit_bias};  // [nB, E]
    }
    loss = loss_->forward(in);
    r.forward_seconds += since(t0);
    const auto t1 = Clock::now();
    if (averager_ && j + 1 == n) averager_->arm();  // the last backward starts the all-reduces
    measure();
    loss.backward();
    r.backward_seconds += since(t1);
  }

  // Everything below stays on the device: no value is read back, so the host runs ahead and
  // queues the next step while this one computes (StepResult::read() is the one sync, made at
  // log points). Across ranks: gradients averaged; the loss is the mean of the ranks' losses,
  // and a stop request on any rank reaches all of them at the same step.
  const at::TensorOptions on_device = at::TensorOptions().dtype(at::kDouble).device(params_[0].device());
  r.loss = loss.detach().to(at::kDouble);  // 0-d
  r.stop = at::full({}, stop_requested ? 1.0 : 0.0, on_device);
  const auto t_reduce = Clock::now();
  if (averager_) averager_->average();
  // The gradients this rank updates from: all of them, or under ZeRO its own share (stage 2
  // already dropped the rest; stage 1 drops them here, after they were counted).
  std::vector<at::Tensor> grads;
  for (size_t k = 0; k < params_.size(); ++k) {
    const at::Tensor& g = params_[k].grad();
    if (!g.defined()) continue;
    r.gradient_bytes += static_cast<int64_t>(g.nbytes());
    if (!owns(k)) params_[k].mutable_grad() = at::Tensor();
    else grads.push_back(g);
  }
  // The squared global gradient norm: this rank's share, summed over ranks under ZeRO.
  at::Tensor norm_sq = grads.empty() ? at::zeros({}, on_device) : at::stack(at::_foreach_norm(grads)).to(at::kDouble).pow(2).sum();
  if (options_.group()) {
    // On the parameters' device: NCCL reduces CUDA tensors only. Sharded layouts sum the squared
    // norms of their shares; a pipeline's other replicas hold copies of replica 0's.
    const bool counts_norm = sharded() && pipe_.replica == 0;
    const at::Tensor head = at::stack({r.loss, r.stop, counts_norm ? norm_sq : at::zeros_like(norm_sq)});  // [3]
    const bool timed = r.pipeline_seconds.defined();  // a pipeline measuring its bubble (alike on every rank)
    std::vector<at::Tensor> v{timed ? at::cat({head, r.pipeline_seconds}) : head};  // [3] or [3 + 2S]
    options_.group()->all_reduce_sum(v);
    if (averager_) {
      const auto& overlap = averager_->last_overlap();
      r.allreduce_hidden_share = overlap.bytes > 0 ? static_cast<double>(overlap.bytes_finished_in_backward) / overlap.bytes : 0;
    }
    // Split: rank 0's loss; pipeline: the mean of the last stages'; else the mean of all ranks'.
    r.loss = v[0][0] / static_cast<double>(split_ ? 1 : pipeline() ? pipe_.replicas : options_.group()->world_size());
    if (timed) {  // [1 + S]: the latest stage's end, then each stage's busy time (means over replicas)
      const at::Tensor times = v[0].slice(0, 3) / static_cast<double>(pipe_.replicas);  // [2S]
      r.pipeline_seconds = at::cat({times.slice(0, 0, pipe_.stages).max().unsqueeze(0), times.slice(0, pipe_.stages)});
    }
    r.stop = v[0][1];
    if (sharded()) norm_sq = v[0][2];
    r.reduce_seconds = since(t_reduce);
  }
  r.grad_norm = norm_sq.sqrt();
  measure_activations_ = false;
  // 1 when the loss or the gradient is not finite: then the update changes nothing.
  r.skipped = at::logical_not(at::logical_and(at::isfinite(r.loss), at::isfinite(r.grad_norm))).to(at::kFloat);
  if (!options_.update()) {
    r.skipped.zero_();
    return r;
  }
  const auto t0 = Clock::now();
  // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1
  // (multiplying by exactly 1 otherwise changes nothing).
  if (options_.grad_clip() > 0 && !grads.empty())  // a ZeRO rank may own no parameter
    at::_foreach_mul_(grads, at::full({}, options_.grad_clip(), on_device).div(r.grad_norm + 1e-6).clamp_max(1.0));
  if (auto* fused = dynamic_cast<FusedAdamW*>(&optimizer_)) {
    fused->step_unless(r.skipped);  // skipped on the device
  } else {
    if (r.read().applied) optimizer_.step();  // another optimizer: the guard costs a sync
  }
  if (averager_ && options_.shard() != Shard::kNone) averager_->broadcast_from_owners();  // every rank gets the owners' new values
  // The clamp is part of the update: a skipped step leaves logit_scale as it was too.
  if (model_->logit_scale.numel() == 0) {  // split towers: rank 0 owns and clamps it
    r.optimizer_seconds = since(t0);
    return r;
  }
  const at::Tensor unclamped = model_->logit_scale.detach().clone();
  model_->clamp_logit_scale();
  {
    torch::NoGradGuard no_grad;
    model_->logit_scale.copy_(at::where(r.skipped.to(at::kBool), unclamped, model_->logit_scale));
  }
  r.optimizer_seconds = since(t0);
  return r;
}

at::Tensor TrainStep::split_forward_backward(const MicroBatch& micro, StepResult& r, const std::function<void()>& measure) {
  auto& group = *options_.group();
  const bool image_rank = group.rank() == 0;
  const at::DeviceType device = micro.images.device().type();
  const bool bf16 = options_.precision() == Precision::kBf16;
  auto since = [&](Clock::time_point t) { return seconds_since(t, micro.images.device(), options_.time_phases()); };
  const auto t0 = Clock::now();
  at::Tensor mine;  // [B, E] float: this rank's tower's normalised features, with its graph
  {
    AutocastGuard autocast(device, bf16);  // the towers only: the loss runs in float, as in run()
    mine = (image_rank ? model_->encode_image(micro.images, true) : model_->encode_text(micro.texts, true)).to(at::kFloat);
  }
  // [2] x [B, E]: the image features (rank 0's) and the text features (rank 1's).
  const std::vector<at::Tensor> both = group.all_gather(mine.detach());
  if (image_rank) {
    // The loss on leaves, so its backward stops at the features: their gradients are what each
    // tower's backward needs, and the text one goes to rank 1 before this rank's own backward.
    at::Tensor img = both[0].requires_grad_(true), txt = both[1].requires_grad_(true);
    LossInput in;
    in.image_features = img;
    in.text_features = txt;
    in.logit_scale = model_->logit_scale.exp();
    if (model_->logit_bias.defined()) in.logit_bias = model_->logit_bias;
    at::Tensor loss = loss_->forward(in);
    r.forward_seconds += since(t0);
    measure();
    const auto t1 = Clock::now();
    loss.backward();  // [B, E] gradients of both features, and logit_scale's (and logit_bias')
    auto sent = group.broadcast_async(txt.grad().contiguous(), 0);
    mine.backward(img.grad());
    sent.wait();
    r.backward_seconds += since(t1);
    return loss;
  }
  r.forward_seconds += since(t0);
  measure();
  const auto t1 = Clock::now();
  at::Tensor grad = at::empty_like(mine);  // [B, E] d loss / d text features, from rank 0
  group.broadcast_async(grad, 0).wait();
  mine.backward(grad);
  r.backward_seconds += since(t1);
  return at::zeros({}, mine.options());  // rank 0 reports the loss
}

at::Tensor TrainStep::pipeline_forward_backward(const MicroBatch& micro, StepResult& r, const std::function<void()>& measure) {
  auto& group = *options_.group();
  const PipelinePlace& pp = pipe_;
  const int64_t M = pp.micro_batches, s = pp.stage;
  const bool first = s == 0, last = s == pp.stages - 1;
  const int64_t prev = group.rank() - 1, next = group.rank() + 1;  // the neighbouring stages of this replica
  const at::Device dev = micro.images.device();
  const bool bf16 = options_.precision() == Precision::kBf16;
  TORCH_CHECK(micro.images.size(0) % M == 0, "pipeline: a batch of ", micro.images.size(0), " does not split into ", M,
              " micro-batches");
  // The bubble: the stages start the step together (a barrier), so the step's span is the latest
  // stage's end; a stage's busy time is what its compute took, and the rest of the span it
  // waited. Host clocks measure compute on a CPU; on a GPU only with time_phases (a sync after
  // each piece), so without it nothing is timed and there is no barrier.
  const bool bubble = dev.is_cpu() || options_.time_phases();
  double busy = 0, span = 0;
  if (bubble) group.barrier();
  const auto t_start = Clock::now();
  auto timed = [&](auto&& fn) {
    const auto t = Clock::now();
    fn();
    if (!bubble) return;
    busy += seconds_since(t, dev, options_.time_phases());
    span = seconds_since(t_start, dev, false);
  };
  std::vector<at::Tensor> kept;               // sent tensors stay alive until their wait
  std::vector<dist::Group::Pending> sending;
  auto send = [&](const at::Tensor& t, int64_t to) {
    kept.push_back(t);
    sending.push_back(group.send_async(t, to));
  };
  // Every stage of a replica reads the same batches with its own loader; a fingerprint of each
  // micro-batch's token ids travels with its activation, so stages that fell out of step (a
  // sample one rank failed to read) stop instead of pairing images with other captions.
  const std::vector<at::Tensor> texts = micro.texts.chunk(M);  // [M] x [b, T]
  auto fingerprint = [&](int64_t j) {  // 0-d int64 on the device; wraps on overflow, alike everywhere
    const at::Tensor& t = texts[j];
    return (t * (at::arange(t.numel(), t.options()).view(t.sizes()) + 1)).sum();
  };
  // An activation goes as a header [ndim, dtype, sizes (up to 5), fingerprint] (its shape may
  // vary: patch dropout, a last partial batch) and then its values.
  constexpr int64_t kHeader = 8, kMaxDims = kHeader - 3;
  auto send_activation = [&](const at::Tensor& y, int64_t j) {
    TORCH_CHECK(y.dim() <= kMaxDims, "pipeline: activations of ", y.dim(), " dimensions (at most ", kMaxDims, ")");
    std::vector<int64_t> h(kHeader, 0);
    h[0] = y.dim();
    h[1] = static_cast<int64_t>(y.scalar_type());
    for (int64_t d = 0; d < y.dim(); ++d) h[2 + d] = y.size(d);
    at::Tensor header = at::tensor(h, at::kLong).to(dev);
    header[kHeader - 1].copy_(fingerprint(j));  // on the device: no sync
    send(header, next);
    send(y.detach().contiguous(), next);
  };
  auto receive_activation = [&](int64_t j) {
    at::Tensor h = at::empty({kHeader}, at::TensorOptions().dtype(at::kLong).device(dev));
    group.recv_async(h, prev).wait();
    const at::Tensor on_host = h.cpu();
    const std::vector<int64_t> v(on_host.data_ptr<int64_t>(), on_host.data_ptr<int64_t>() + kHeader);
    TORCH_CHECK(v[0] >= 1 && v[0] <= kMaxDims, "pipeline: stage ", s, " received a malformed activation header");
    TORCH_CHECK(v[kHeader - 1] == fingerprint(j).item<int64_t>(), "pipeline: micro-batch ", j, " of stage ", s,
                " holds other captions than stage ", s - 1, "'s: the two ranks' loaders fell out of step (a sample one "
                "of them could not read?); stopping rather than pairing images with the wrong captions");
    at::Tensor x = at::empty(std::vector<int64_t>(v.begin() + 2, v.begin() + 2 + v[0]),
                             at::TensorOptions().dtype(static_cast<at::ScalarType>(v[1])).device(dev));
    group.recv_async(x, prev).wait();
    return x.requires_grad_(true);  // a leaf: its gradient goes back to the previous stage
  };

  // The last stage runs the text tower on the whole batch first, while the first micro-batch
  // is on its way through the earlier stages.
  at::Tensor text;  // [B, E] float, with its graph
  if (last)
    timed([&] {
      AutocastGuard autocast(dev.type(), bf16);
      text = model_->encode_text(micro.texts, true).to(at::kFloat);
    });
  // Forward: every micro-batch through this stage, each sent on as soon as it is done.
  const std::vector<at::Tensor> images = first ? micro.images.chunk(M) : std::vector<at::Tensor>{};
  std::vector<at::Tensor> inputs(M), outputs(M);  // [M] this stage's input and output activations
  for (int64_t j = 0; j < M; ++j) {
    if (!first) inputs[j] = receive_activation(j);
    timed([&] {
      AutocastGuard autocast(dev.type(), bf16);
      at::Tensor x = first ? model_->image_stem(images[j]) : inputs[j];  // ViT [b, T, W]; ResNet [b, C, H, W]
      x = model_->image_blocks(x, pp.begin, pp.end);
      outputs[j] = last ? model_->image_head(x, true).to(at::kFloat) : x;  // last: [b, E] float
    });
    if (!last) send_activation(outputs[j], j);
  }
  // The loss over the whole batch, on leaves: its backward stops at the features, whose
  // gradients then go back micro-batch by micro-batch.
  at::Tensor loss;
  std::vector<at::Tensor> features(M);  // last stage: [M] leaves [b, E]
  at::Tensor text_leaf;
  if (last)
    timed([&] {
      for (int64_t j = 0; j < M; ++j) features[j] = outputs[j].detach().requires_grad_(true);
      text_leaf = text.detach().requires_grad_(true);
      LossInput in;
      in.image_features = M == 1 ? features[0] : at::cat(features);  // [B, E]
      in.text_features = text_leaf;
      in.logit_scale = model_->logit_scale.exp();
      if (model_->logit_bias.defined()) in.logit_bias = model_->logit_bias;
      loss = loss_->forward(in);
    });
  measure();
  if (last) timed([&] { loss.backward(); });  // the features' gradients, logit_scale's (and logit_bias')
  // Backward in reverse micro-batch order: each micro-batch's output gradient comes from the next
  // stage (the loss on the last), and its input gradient goes to the previous one.
  for (int64_t j = M - 1; j >= 0; --j) {
    at::Tensor grad;
    if (last) {
      grad = features[j].grad();
    } else {
      grad = at::empty(outputs[j].sizes(), outputs[j].options());  // contiguous, as sent
      group.recv_async(grad, next).wait();
    }
    if (averager_ && j == 0) {  // the last backward of this stage's blocks
      averager_->arm();
      if (last) {  // the loss's backward wrote these already: their bucket need not wait for them
        averager_->mark_ready(model_->logit_scale);
        if (model_->logit_bias.defined()) averager_->mark_ready(model_->logit_bias);
      }
    }
    timed([&] { outputs[j].backward(grad); });
    if (!first) send(inputs[j].grad().contiguous(), prev);
  }
  if (last) timed([&] { text.backward(text_leaf.grad()); });  // while the earlier stages drain
  for (auto& p : sending) p.wait();
  if (bubble) {
    std::vector<double> times(2 * pp.stages, 0.0);  // [span per stage, busy per stage]: this rank's entries
    times[s] = span;
    times[pp.stages + s] = busy;
    r.pipeline_seconds = at::tensor(times, at::kDouble).to(dev);
  }
  return last ? loss : at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(dev));
}

StepValues StepResult::read() const {
  const std::vector<double> v = read_scalars({loss, grad_norm, skipped, stop});
  StepValues out;
  out.loss = v[0];
  out.grad_norm = v[1];
  out.applied = v[2] == 0;
  out.stop = v[3] > 0;
  return out;
}

}  // namespace torchclip
