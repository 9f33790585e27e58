// AdamW with LibTorch's fused CPU/CUDA kernel (at::_fused_adamw_, what torch.optim.AdamW(fused=True)
// runs): one pass over each parameter's memory per step instead of about ten elementwise
// kernels. Same options, parameter groups and state (AdamWParamState) as torch::optim::AdamW,
// so checkpoints and code written for it keep working. amsgrad is supported.
#pragma once

#include <torch/optim/adamw.h>

namespace torchclip {

class FusedAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;
  at::Tensor step(LossClosure closure = nullptr) override;
};

}  // namespace torchclip
