#include "train/step.h"

#include "distributed/dist.h"
#include "optim/fused_adamw.h"
#include "util/autocast.h"
#include "util/cpu_allocator.h"
#include "util/device.h"

#include <ATen/ATen.h>
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
  if (options_.towers() == Towers::kSplit) {
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

bool TrainStep::owns(size_t k) const { return owners_.empty() || owners_[k] == options_.group()->rank(); }

bool TrainStep::owns_parameter(const at::Tensor& param) const {
  for (size_t k = 0; k < params_.size(); ++k)
    if (params_[k].unsafeGetTensorImpl() == param.unsafeGetTensorImpl()) return owns(k);
  return true;
}

int64_t TrainStep::parameter_bytes() const {
  int64_t bytes = 0;
  for (const auto& p : params_) bytes += static_cast<int64_t>(p.nbytes());
  return bytes;
}

void TrainStep::gather_parameters() {
  if (!split_) return;
  at::NoGradGuard no_grad;
  auto& group = *options_.group();
  for (size_t k = 0; k < params_.size(); ++k) {
    if (owners_[k] == 0) continue;
    at::Tensor p = params_[k];
    if (group.rank() == 0) p.set_data(at::empty(shapes_[k], p.options()));
    at::Tensor buffer = group.rank() == 0 || owns(k) ? p.detach() : at::empty(shapes_[k], p.options());
    group.broadcast_async(buffer, owners_[k]).wait();
  }
}

void TrainStep::release_unowned_parameters() {
  if (!split_) return;
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
      if (!owns(k)) continue;
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
  if (split_) {
    TORCH_CHECK(n == 1, "dist.towers: split trains one micro-batch per step, got ", n);
    loss = split_forward_backward(micro[0], r, measure);
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
  for (size_t j = 0; j < (split_ ? 0 : n); ++j) {
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
    // On the parameters' device: NCCL reduces CUDA tensors only.
    std::vector<at::Tensor> v{at::stack({r.loss, r.stop, sharded() ? norm_sq : at::zeros_like(norm_sq)})};  // [3]
    options_.group()->all_reduce_sum(v);
    if (averager_) {
      const auto& overlap = averager_->last_overlap();
      r.allreduce_hidden_share = overlap.bytes > 0 ? static_cast<double>(overlap.bytes_finished_in_backward) / overlap.bytes : 0;
    }
    r.loss = split_ ? v[0][0] : v[0][0] / static_cast<double>(options_.group()->world_size());  // split: rank 0's
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
  if (averager_ && sharded()) averager_->broadcast_from_owners();  // every rank gets the owners' new values
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
