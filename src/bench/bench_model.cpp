#include "bench/bench_model.h"

#include "loss/loss.h"
#include "model/clip.h"
#include "util/progress.h"

#include <ATen/autocast_mode.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <vector>

namespace torchclip {
namespace {

using Clock = std::chrono::steady_clock;

at::Device parse_device(const std::string& d) {
  TORCH_CHECK(d == "cpu" || d == "cuda", "bench: --device must be cpu or cuda, got '", d, "'");
  if (d == "cuda") TORCH_CHECK(at::hasCUDA(), "bench: --device cuda, but this build or machine has no CUDA device");
  return d == "cuda" ? at::Device(at::kCUDA) : at::Device(at::kCPU);
}

void synchronize(const at::Device& device) {
  // A tiny device->host copy waits for all queued work on the current stream.
  if (device.is_cuda()) at::zeros({1}, at::TensorOptions().device(device)).cpu();
}

/// Enables autocast to bf16 on `device` for its lifetime.
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
    // The weight-cast cache lives until cleared; without this a later step would reuse stale
    // bf16 copies of weights that the optimizer has since changed.
    at::autocast::clear_cache();
  }

 private:
  at::DeviceType device_;
  bool enabled_, previous_ = false;
};

}  // namespace

double measure_matmul_gflops(const std::string& device_name, const std::string& precision, int64_t n) {
  const at::Device device = parse_device(device_name);
  const auto dtype = precision == "bf16" ? at::kBFloat16 : at::kFloat;
  auto opts = at::TensorOptions().device(device).dtype(dtype);
  auto a = at::randn({n, n}, opts), b = at::randn({n, n}, opts);
  at::matmul(a, b);
  synchronize(device);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    int64_t count = 0;
    auto t0 = Clock::now();
    double dt = 0;
    do {
      at::matmul(a, b);
      ++count;
      synchronize(device);
      dt = std::chrono::duration<double>(Clock::now() - t0).count();
    } while (dt < 0.1);
    best = std::max(best, 2.0 * n * n * n * count / dt / 1e9);
  }
  return best;
}

BenchModelResult bench_model(const BenchModelOptions& o) {
  TORCH_CHECK(o.batch() > 0 && o.iters() > 0 && o.warmup() >= 0, "bench model: --batch and --iters must be > 0");
  TORCH_CHECK(o.precision() == "fp32" || o.precision() == "bf16",
              "bench model: --precision must be fp32 or bf16, got '", o.precision(), "'");
  if (o.threads() > 0) at::set_num_threads(static_cast<int>(o.threads()));
  const at::Device device = parse_device(o.device());
  at::manual_seed(o.seed());

  ModelConfig cfg = load_model_config(o.config());
  CLIP model(cfg);
  model->to(device);
  model->train();
  auto loss_fn = make_loss("clip");

  const int64_t B = o.batch(), S = cfg.vision_cfg().image_size(), T = cfg.text_cfg().context_length();
  const int64_t V = cfg.text_cfg().vocab_size();
  auto images = at::randn({B, 3, S, S}, at::TensorOptions().device(device));
  // Random ids with the largest id (CLIP's EOT) at a random position of each row.
  auto ids = at::randint(1, V - 1, {B, T}, at::TensorOptions().dtype(at::kLong).device(device));
  auto eot = at::randint(1, T, {B, 1}, at::TensorOptions().dtype(at::kLong).device(device));
  ids.scatter_(1, eot, V - 1);

  BenchModelResult r;
  r.config = o.config();
  r.precision = o.precision();
  r.device = o.device();
  r.batch = B;
  r.iters = o.iters();
  r.threads = at::get_num_threads();
  r.parameters = parameter_count(*model);
  r.forward_flops_per_sample = model->image_flops() + model->text_flops();
  r.train_flops_per_sample = 3 * r.forward_flops_per_sample;

  std::vector<double> times;
  Progress progress(fmt::format("bench {} b{}", o.config(), B), o.warmup() + o.iters(), "step",
                    stderr);
  for (int64_t i = 0; i < o.warmup() + o.iters(); ++i) {
    for (auto& p : model->parameters()) p.mutable_grad() = at::Tensor();
    synchronize(device);
    auto t0 = Clock::now();
    at::Tensor loss;
    {
      AutocastGuard autocast(device.type(), o.precision() == "bf16");
      auto out = model->forward(images, ids);
      loss = loss_fn->forward({out.image_features, out.text_features, out.logit_scale, out.logit_bias});
    }
    loss.backward();
    synchronize(device);
    double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    if (i >= o.warmup()) times.push_back(dt);
    r.loss = loss.item<double>();
    if (o.progress()) progress.advance(1, fmt::format("loss {:.4f}", r.loss));
  }
  if (o.progress()) progress.finish();
  std::sort(times.begin(), times.end());
  r.step_seconds_median = times[times.size() / 2];
  r.step_seconds_min = times.front();
  r.samples_per_second = B / r.step_seconds_median;
  r.achieved_gflops = r.train_flops_per_sample * r.samples_per_second / 1e9;
  r.matmul_gflops = measure_matmul_gflops(o.device(), o.precision());
  r.utilisation = r.achieved_gflops / r.matmul_gflops;
  return r;
}

std::string to_json(const BenchModelResult& r) {
  return fmt::format(
      "{{\"config\": \"{}\", \"device\": \"{}\", \"precision\": \"{}\", \"batch\": {}, \"iters\": {}, "
      "\"threads\": {}, \"parameters\": {}, \"step_seconds_median\": {:.6f}, \"step_seconds_min\": {:.6f}, "
      "\"samples_per_second\": {:.4f}, \"forward_flops_per_sample\": {}, \"train_flops_per_sample\": {}, "
      "\"achieved_gflops\": {:.3f}, \"matmul_gflops\": {:.3f}, \"utilisation\": {:.4f}, \"loss\": {:.6f}}}",
      r.config, r.device, r.precision, r.batch, r.iters, r.threads, r.parameters, r.step_seconds_median,
      r.step_seconds_min, r.samples_per_second, r.forward_flops_per_sample, r.train_flops_per_sample,
      r.achieved_gflops, r.matmul_gflops, r.utilisation, r.loss);
}

std::string to_text(const BenchModelResult& r) {
  return fmt::format(
      "model {} on {} ({}, {} threads), batch {}, {} timed steps\n"
      "  parameters            {:>12}\n"
      "  forward+backward      {:>12.2f} samples/s   (median step {:.1f} ms, best {:.1f} ms)\n"
      "  model FLOPs/sample    {:>12.3f} GFLOP forward, {:.3f} GFLOP train (3x)\n"
      "  achieved              {:>12.2f} GFLOP/s\n"
      "  machine matmul        {:>12.2f} GFLOP/s   -> utilisation {:.1f}%\n",
      r.config, r.device, r.precision, r.threads, r.batch, r.iters, r.parameters, r.samples_per_second,
      r.step_seconds_median * 1e3, r.step_seconds_min * 1e3, r.forward_flops_per_sample / 1e9,
      r.train_flops_per_sample / 1e9, r.achieved_gflops, r.matmul_gflops, 100 * r.utilisation);
}

}  // namespace torchclip
