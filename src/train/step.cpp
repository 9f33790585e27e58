#include "train/step.h"

#include "distributed/dist.h"
#include "util/autocast.h"
#include "util/device.h"

#include <ATen/ATen.h>
#include <torch/optim/adamw.h>

#include <chrono>
#include <cmath>

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

  // Across ranks: gradients averaged; the loss is the mean of the ranks' losses, and a stop
  // request on any rank stops all of them at the same step.
  r.loss = loss.item<double>();
  r.stop = stop_requested;
  if (options_.group()) {
    const auto t0 = Clock::now();
    averager_->average();
    // On the parameters' device: NCCL reduces CUDA tensors only.
    std::vector<at::Tensor> v{at::tensor({r.loss, stop_requested ? 1.0 : 0.0}, at::kDouble).to(params_[0].device())};
    options_.group()->all_reduce_sum(v);
    const auto& overlap = averager_->last_overlap();
    r.allreduce_hidden_share = overlap.bytes > 0 ? static_cast<double>(overlap.bytes_finished_in_backward) / overlap.bytes : 0;
    auto sums = v[0].cpu();
    r.loss = sums[0].item<double>() / static_cast<double>(options_.group()->world_size());
    r.stop = sums[1].item<double>() > 0;
    r.reduce_seconds = since(t0);
  }

  if (!options_.update()) {
    r.applied = true;
    return r;
  }
  // The global gradient norm, computed once: it decides the non-finite guard and the clip.
  const auto t0 = Clock::now();
  std::vector<at::Tensor> grads;
  for (const auto& p : params_)
    if (p.grad().defined()) grads.push_back(p.grad());
  const double norm = grads.empty() ? 0.0 : at::stack(at::_foreach_norm(grads)).to(at::kDouble).norm().item<double>();
  r.grad_norm = norm;
  if (!std::isfinite(r.loss) || !std::isfinite(norm)) {
    optimizer_.zero_grad();  // a non-finite step changes nothing
    return r;
  }
  // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1.
  if (options_.grad_clip() > 0) {
    const double coef = options_.grad_clip() / (norm + 1e-6);
    if (coef < 1) at::_foreach_mul_(grads, coef);
  }
  optimizer_.step();
  model_->clamp_logit_scale();
  r.optimizer_seconds = since(t0);
  r.applied = true;
  return r;
}

}  // namespace torchclip
