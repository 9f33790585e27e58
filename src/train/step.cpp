#include "train/step.h"

#include "distributed/dist.h"
#include "optim/fused_adamw.h"
#include "util/autocast.h"
#include "util/device.h"

#include <ATen/ATen.h>
#include <torch/optim/adamw.h>

#include <chrono>

namespace torchclip {
namespace {

using Clock = std::chrono::steady_clock;

bool decay_exempt(const std::string& name, const at::Tensor& p) {
  auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  return p.dim() < 2 || has("bn") || has("ln") || has("bias") || has("logit_scale");
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
  if (options_.group())
    averager_ = std::make_unique<dist::GradientAverager>(options_.group(), params_, options_.bucket_bytes());
}

TrainStep::~TrainStep() = default;

StepResult TrainStep::run(const std::vector<MicroBatch>& micro, double lr, bool stop_requested) {
  TORCH_CHECK(!micro.empty(), "train step: no micro-batch");
  StepResult r;
  const bool bf16 = options_.precision() == Precision::kBf16;
  const at::DeviceType device = micro[0].images.device().type();
  auto since = [&](Clock::time_point t) {
    if (options_.time_phases()) synchronize(micro[0].images.device());
    return std::chrono::duration<double>(Clock::now() - t).count();
  };
  for (auto& g : optimizer_.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
  optimizer_.zero_grad();

  // Forward and backward. One micro-batch: the plain step. Several: OpenCLIP's accumulation,
  // features of every micro-batch without gradient first, so each micro-batch's loss compares
  // it against the whole accumulated batch.
  const size_t n = micro.size();
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
  at::Tensor loss;
  for (size_t j = 0; j < n; ++j) {
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
  if (options_.group()) {
    const auto t0 = Clock::now();
    averager_->average();
    // On the parameters' device: NCCL reduces CUDA tensors only.
    std::vector<at::Tensor> v{at::stack({r.loss, r.stop})};  // [2]
    options_.group()->all_reduce_sum(v);
    const auto& overlap = averager_->last_overlap();
    r.allreduce_hidden_share = overlap.bytes > 0 ? static_cast<double>(overlap.bytes_finished_in_backward) / overlap.bytes : 0;
    r.loss = v[0][0] / static_cast<double>(options_.group()->world_size());
    r.stop = v[0][1];
    r.reduce_seconds = since(t0);
  }

  // The global gradient norm, computed once: it decides the non-finite guard and the clip.
  std::vector<at::Tensor> grads;
  for (const auto& p : params_)
    if (p.grad().defined()) grads.push_back(p.grad());
  r.grad_norm = grads.empty() ? at::zeros({}, on_device) : at::stack(at::_foreach_norm(grads)).to(at::kDouble).norm();
  // 1 when the loss or the gradient is not finite: then the update changes nothing.
  r.skipped = at::logical_not(at::logical_and(at::isfinite(r.loss), at::isfinite(r.grad_norm))).to(at::kFloat);
  if (!options_.update()) {
    r.skipped.zero_();
    return r;
  }
  const auto t0 = Clock::now();
  // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1
  // (multiplying by exactly 1 otherwise changes nothing).
  if (options_.grad_clip() > 0)
    at::_foreach_mul_(grads, at::full({}, options_.grad_clip(), on_device).div(r.grad_norm + 1e-6).clamp_max(1.0));
  if (auto* fused = dynamic_cast<FusedAdamW*>(&optimizer_)) {
    fused->step_unless(r.skipped);  // skipped on the device
  } else {
    if (r.read().applied) optimizer_.step();  // another optimizer: the guard costs a sync
  }
  // The clamp is part of the update: a skipped step leaves logit_scale as it was too.
  const at::Tensor unclamped = model_->logit_scale.detach().clone();
  model_->clamp_logit_scale();
  {
    torch::NoGradGuard no_grad;
    model_->logit_scale.copy_(at::where(r.skipped.to(at::kBool), unclamped, model_->logit_scale));
  }
  r.optimizer_seconds = since(t0);
  return r;
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
