// AdamW with LibTorch's fused CPU/CUDA kernel (at::_fused_adamw_, what torch.optim.AdamW(fused=True)
// runs): one pass over each parameter's memory per step instead of about ten elementwise
// kernels. Same options, parameter groups and state (AdamWParamState) as torch::optim::AdamW,
// so checkpoints and code written for it keep working. amsgrad is supported.
//
// The step counts the kernel reads live on the parameters' device (float, as PyTorch's fused
// AdamW keeps them), so a step needs nothing from the host, and a step can be skipped on the
// device (step_unless) the way GradScaler skips one: parameters, moments and counts unchanged.
#pragma once

#include <torch/optim/adamw.h>

#include <unordered_map>

namespace torchclip {

class FusedAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;
  at::Tensor step(LossClosure closure = nullptr) override;
  /// One update, skipped where `found_inf` (0-d float on the parameters' device) is 1. Nothing
  /// is read back to the host.
  void step_unless(const at::Tensor& found_inf);
  /// Writes the device step counts into each AdamWParamState::step (before saving the state;
  /// one copy to the host). The host counts are otherwise those of the last sync plus the steps
  /// taken since, skipped ones included.
  void sync_state();
  /// Forgets `param`'s state (its moments and step count), as if it had never stepped.
  void drop_state(const at::Tensor& param);

 private:
  void update(const std::optional<at::Tensor>& found_inf);
  struct Count {
    at::Tensor device;      // 0-d float: the step count the kernel reads
    int64_t host_seen = 0;  // AdamWParamState::step when `device` was last in step with it
  };
  std::unordered_map<const void*, Count> counts_;  // by AdamWParamState
};

}  // namespace torchclip
