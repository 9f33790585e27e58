// Shared test helpers: seeded fixtures, tensor comparison with tolerances, a finite-difference
// gradient check, and token ids with CLIP's EOT convention.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <sys/wait.h>
#include <functional>
#include <string>
#include <vector>

namespace torchclip::test {

/// max |a - b| <= atol + rtol * |b|, elementwise, with the worst element reported.
inline ::testing::AssertionResult all_close(const at::Tensor& a, const at::Tensor& b, double atol = 1e-6,
                                            double rtol = 1e-5) {
  if (a.sizes() != b.sizes()) {
    return ::testing::AssertionFailure() << "shapes differ: " << a.sizes() << " vs " << b.sizes();
  }
  auto diff = (a.to(at::kDouble) - b.to(at::kDouble)).abs();
  auto tol = atol + rtol * b.to(at::kDouble).abs();
  if (diff.le(tol).all().item<bool>()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "max abs diff " << diff.max().item<double>() << " exceeds tolerance (atol "
                                       << atol << ", rtol " << rtol << ")";
}

/// Compares autograd gradients of scalar fn(inputs) with central differences, in double.
inline ::testing::AssertionResult gradcheck(const std::function<at::Tensor(const std::vector<at::Tensor>&)>& fn,
                                            std::vector<at::Tensor> inputs, double eps = 1e-6, double atol = 1e-6,
                                            double rtol = 1e-4) {
  for (auto& x : inputs) x = x.detach().to(at::kDouble).requires_grad_(true);
  auto out = fn(inputs);
  if (out.numel() != 1) return ::testing::AssertionFailure() << "gradcheck needs a scalar output";
  auto analytic = torch::autograd::grad({out}, inputs, {}, false, false, /*allow_unused=*/true);
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < inputs.size(); ++i) {
    auto base = inputs[i].detach().clone();
    auto flat = base.view(-1);
    for (int64_t j = 0; j < flat.numel(); ++j) {
      auto eval = [&](double delta) {
        std::vector<at::Tensor> moved(inputs.begin(), inputs.end());
        auto x = base.clone();
        x.view(-1)[j] += delta;
        moved[i] = x;
        return fn(moved).item<double>();
      };
      const double numeric = (eval(eps) - eval(-eps)) / (2 * eps);
      const double exact = analytic[i].defined() ? analytic[i].reshape(-1)[j].item<double>() : 0.0;
      if (std::abs(numeric - exact) > atol + rtol * std::abs(numeric)) {
        return ::testing::AssertionFailure() << "input " << i << " element " << j << ": autograd " << exact
                                             << " vs finite difference " << numeric;
      }
    }
  }
  return ::testing::AssertionSuccess();
}

/// Token ids [B, T] in [1, V-2] with the largest id V-1 (CLIP's EOT) at position eot[b], zeros after.
inline at::Tensor ids_with_eot(const std::vector<int64_t>& eot, int64_t T, int64_t V, uint64_t seed = 0) {
  auto gen = at::detail::createCPUGenerator(seed);
  const int64_t B = static_cast<int64_t>(eot.size());
  auto ids = at::randint(1, V - 1, {B, T}, gen, at::kLong);
  for (int64_t b = 0; b < B; ++b) {
    ids[b][eot[b]] = V - 1;
    if (eot[b] + 1 < T) ids[b].slice(0, eot[b] + 1).zero_();
  }
  return ids;
}

/// A fresh folder under the system temp dir, removed by the caller if wanted.
inline std::filesystem::path temp_dir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() / ("torchclip_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::create_directories(p);
  return p;
}

/// The message of the exception of type E that fn throws, or "<no error>".
template <typename E, typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  return "<no error>";
}

/// Runs a shell command; exit code and stdout+stderr. run_cli runs the torchclip binary with `args`.
struct CliRun {
  int code;
  std::string out;
};
inline CliRun run_shell(const std::string& command) {
  const std::string cmd = command + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf{};
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}
inline CliRun run_cli(const std::string& args) { return run_shell(std::string(TORCHCLIP_BINARY) + " " + args); }

}  // namespace torchclip::test
