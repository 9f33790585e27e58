#include "optim/fused_adamw.h"

#include "util/device.h"

#include <ATen/ATen.h>

namespace torchclip {

at::Tensor FusedAdamW::step(LossClosure closure) {
  at::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  update(std::nullopt);
  return loss;
}

void FusedAdamW::step_unless(const at::Tensor& found_inf) {
  TORCH_CHECK(found_inf.numel() == 1 && found_inf.scalar_type() == at::kFloat,
              "FusedAdamW::step_unless: found_inf must be a one-element float tensor");
  update(found_inf.reshape({}));
}

void FusedAdamW::update(const std::optional<at::Tensor>& found_inf) {
  at::NoGradGuard no_grad;
  for (auto& group : param_groups()) {
    auto& o = static_cast<torch::optim::AdamWOptions&>(group.options());
    std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps;
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      TORCH_CHECK(!p.grad().is_sparse(), "AdamW does not support sparse gradients");
      auto& slot = state()[p.unsafeGetTensorImpl()];
      if (!slot) {
        auto s = std::make_unique<torch::optim::AdamWParamState>();
        s->step(0);
        s->exp_avg(at::zeros_like(p, at::MemoryFormat::Preserve));
        s->exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
        if (o.amsgrad()) s->max_exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
        slot = std::move(s);
      }
      auto& s = static_cast<torch::optim::AdamWParamState&>(*slot);
      Count& c = counts_[&s];
      // New state, or a state whose host count was set from outside (a checkpoint restored):
      // the device count starts from the host's.
      if (!c.device.defined() || c.host_seen != s.step() || c.device.device() != p.device()) {
        c.device = at::full({}, static_cast<double>(s.step()), p.options().dtype(at::kFloat));
        c.host_seen = s.step();
      }
      s.step(s.step() + 1);  // the host's count, as torch::optim::AdamW keeps it (sync_state corrects skips)
      c.host_seen = s.step();
      params.push_back(p);
      grads.push_back(p.grad());
      exp_avgs.push_back(s.exp_avg());
      exp_avg_sqs.push_back(s.exp_avg_sq());
      if (o.amsgrad()) max_exp_avg_sqs.push_back(s.max_exp_avg_sq());
      steps.push_back(c.device);
    }
    if (params.empty()) continue;
    // The kernel reads the incremented count; a skipped step adds 0 (PyTorch adds 1, then
    // subtracts found_inf: the same counts).
    if (found_inf) at::_foreach_add_(steps, at::rsub(*found_inf, 1.0));
    else at::_foreach_add_(steps, 1.0);
    at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, o.lr(), std::get<0>(o.betas()),
                      std::get<1>(o.betas()), o.weight_decay(), o.eps(), o.amsgrad(), /*maximize=*/false,
                      /*grad_scale=*/std::nullopt, found_inf);
  }
}

void FusedAdamW::drop_state(const at::Tensor& param) {
  auto it = state().find(param.unsafeGetTensorImpl());
  if (it == state().end()) return;
  counts_.erase(it->second.get());
  state().erase(it);
}

void FusedAdamW::sync_state() {
  std::vector<torch::optim::AdamWParamState*> states;
  std::vector<at::Tensor> counts;
  for (auto& [impl, slot] : state()) {
    auto* s = static_cast<torch::optim::AdamWParamState*>(slot.get());
    auto it = counts_.find(s);
    if (it == counts_.end() || it->second.host_seen != s->step()) continue;  // set from outside: the host is right
    states.push_back(s);
    counts.push_back(it->second.device);
  }
  if (states.empty()) return;
  const std::vector<double> host = read_scalars(counts);  // one copy
  for (size_t i = 0; i < states.size(); ++i) {
    states[i]->step(static_cast<int64_t>(host[i]));
    counts_[states[i]].host_seen = states[i]->step();
  }
}

}  // namespace torchclip
