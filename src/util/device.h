// Devices by name: "auto", "cpu", "cuda" or "cuda:N", resolved once where a config key or a flag
// is read. Asking for CUDA on a build or machine without it is an error naming the key or flag.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <vector>

namespace torchclip {

/// True for "auto", "cpu", "cuda" and "cuda:N" (N a non-negative integer).
bool valid_device_name(const std::string& name);

/// The device `name` names. "auto" is cuda:`local_rank` when this build and machine have CUDA
/// devices (one GPU per local rank, as torchrun jobs use them), else cpu. Throws
/// std::invalid_argument naming `where` for a malformed name, for CUDA on a build or machine
/// without it, and for a device index that does not exist.
c10::Device resolve_device(const std::string& name, const std::string& where, int64_t local_rank = 0);

/// Waits for the work queued on `device` (a tiny device-to-host copy); nothing to wait for on the
/// CPU, where every op has finished when it returns.
void synchronize(const c10::Device& device);
/// The values of several 0-d tensors (any dtypes, one device) as doubles, in one device-to-host
/// copy: where a loop has to look at device results, one sync instead of one per value.
std::vector<double> read_scalars(const std::vector<at::Tensor>& scalars);

}  // namespace torchclip
