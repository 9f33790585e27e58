// bf16 autocast for a scope, on CPU or CUDA.
#pragma once

#include <ATen/autocast_mode.h>

namespace torchclip {

/// Enables autocast to bf16 on `device` for its lifetime, then restores the previous state and
/// clears the autocast weight cache. In C++ nothing else clears that cache: without the clear, the
/// next step would reuse bf16 copies of weights the optimizer has since changed, and training
/// would silently stop learning.
class AutocastGuard {
 public:
  AutocastGuard(at::DeviceType device, bool enabled) : device_(device), enabled_(enabled) {
    if (!enabled_) return;
    previous_ = at::autocast::is_autocast_enabled(device_);
    at::autocast::set_autocast_enabled(device_, true);
    at::autocast::set_autocast_dtype(device_, at::kBFloat16);
  }
  ~AutocastGuard() {
    if (!enabled_) return;
    at::autocast::set_autocast_enabled(device_, previous_);
    at::autocast::clear_cache();
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  at::DeviceType device_;
  bool enabled_, previous_ = false;
};

}  // namespace torchclip
