#include "util/device.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <fmt/format.h>

#include <stdexcept>

namespace torchclip {
namespace {

/// -1 for "cuda", N for "cuda:N", -2 when not a CUDA name.
int64_t cuda_index(const std::string& name) {
  if (name == "cuda") return -1;
  if (name.rfind("cuda:", 0) != 0 || name.size() == 5 || name.size() > 9) return -2;
  for (size_t i = 5; i < name.size(); ++i)
    if (name[i] < '0' || name[i] > '9') return -2;
  return std::stoll(name.substr(5));
}

}  // namespace

void synchronize(const c10::Device& device) {
  if (!device.is_cpu()) at::zeros({1}, at::TensorOptions().device(device)).cpu();
}

std::vector<double> read_scalars(const std::vector<at::Tensor>& scalars) {
  std::vector<at::Tensor> flat;
  for (const auto& t : scalars) flat.push_back(t.reshape({1}).to(at::kDouble));
  const at::Tensor host = at::cat(flat).cpu();  // [n]
  const double* p = host.data_ptr<double>();
  return std::vector<double>(p, p + host.numel());
}

bool valid_device_name(const std::string& name) { return name == "auto" || name == "cpu" || cuda_index(name) != -2; }

c10::Device resolve_device(const std::string& name, const std::string& where, int64_t local_rank) {
  if (!valid_device_name(name))
    throw std::invalid_argument(fmt::format("{}: \"{}\" is not a device; valid: auto, cpu, cuda, cuda:N", where, name));
  const bool have_cuda = at::hasCUDA();
  if (name == "cpu" || (name == "auto" && !have_cuda)) return c10::Device(c10::kCPU);
  // A valid name this machine cannot honour is a run-time condition (exit 1), not a usage error.
  if (!have_cuda)
    throw std::runtime_error(fmt::format(
        "{}: \"{}\" asked for, but this build or machine has no CUDA device (CUDA needs a build configured with "
        "-DTORCHCLIP_CUDA=ON and an NVIDIA GPU); use cpu or auto",
        where, name));
  const int64_t count = static_cast<int64_t>(at::getNumGPUs());
  int64_t index = name == "auto" ? local_rank : cuda_index(name);
  if (index == -1) index = local_rank;
  if (index >= count)
    throw std::runtime_error(
        fmt::format("{}: \"{}\" is device {}, but this machine has {} CUDA device(s)", where, name, index, count));
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

}  // namespace torchclip
