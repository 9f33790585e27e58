#include "bench/bench_model.h"
#include "bench/stats.h"

#include "distributed/dist.h"
#include "io/fsutil.h"
#include "loss/loss.h"
#include "model/clip.h"
#include "optim/fused_adamw.h"
#include "train/step.h"
#include "util/cpu_allocator.h"
#include "util/device.h"
#include "util/json.h"
#include "util/progress.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <vector>

namespace torchclip {
namespace {

constexpr const char* kOpenclipTunedMalloc = "MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824";

using Clock = std::chrono::steady_clock;

at::Device parse_device(const std::string& d) {
  return resolve_device(d, "bench --device");
  return d == "cuda" ? at::Device(at::kCUDA) : at::Device(at::kCPU);
}


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
  const Precision precision = parse_enum<Precision>(o.precision(), "--precision");
  if (o.threads() > 0) at::set_num_threads(static_cast<int>(o.threads()));
  const at::Device device = parse_device(o.device());
  at::manual_seed(o.seed());
  if (device.is_cuda()) {  // as train.tf32 defaults (and the open_clip side of bench train sets)
    at::globalContext().setAllowTF32CuBLAS(true);
    at::globalContext().setAllowTF32CuDNN(true);
  }

  ModelConfig cfg = load_model_config(o.config());
  CLIP model(cfg);
  model->set_grad_checkpointing(o.grad_checkpointing());
  model->to(device);
  model->train();
  // The training step `train()` runs, with its parameter groups (defaults of `optim:`).
  auto loss_fn = make_loss("clip");
  if (o.group())
    loss_fn->set_distributed(std::make_shared<dist::GroupGather>(o.group()),
                             DistributedLossOptions().local_loss(true).gather_with_grad(true));
  FusedAdamW optimizer(param_groups(model, OptimCfg()));
  TrainStep step(model, loss_fn, optimizer,
                 StepOptions()
                     .precision(precision)
                     .group(o.group())
                     .bucket_bytes(static_cast<int64_t>(o.bucket_mb() * (1 << 20)))
                     .update(o.optimizer_step())
                     .time_phases(device.is_cuda()));

  const int64_t B = o.batch(), S = cfg.vision_cfg().image_size(), T = cfg.text_cfg().context_length();
  const int64_t V = cfg.text_cfg().vocab_size();
  auto images = at::randn({B, 3, S, S}, at::TensorOptions().device(device));
  // Captions of 8 to 24 tokens (image-caption data is short: LAION's median is about a dozen
  // words), padded with zeros; the largest id (CLIP's EOT) ends each. The open_clip side of
  // `bench train` uses the same rule.
  auto ids = at::randint(1, V - 1, {B, T}, at::TensorOptions().dtype(at::kLong).device(device));
  const int64_t lo = std::min<int64_t>(8, T - 1), hi = std::min<int64_t>(24, T - 1);
  auto eot = at::randint(lo, hi + 1, {B, 1}, at::TensorOptions().dtype(at::kLong).device(device));
  ids.masked_fill_(at::arange(T, ids.options()).unsqueeze(0).gt(eot), 0);
  ids.scatter_(1, eot, V - 1);

  BenchModelResult r;
  r.config = o.config();
  r.precision = o.precision();
  r.device = o.device();
  r.batch = B;
  r.iters = o.iters();
  r.threads = at::get_num_threads();
  r.parameters = parameter_count(*model);
  // The text tower runs only up to the longest caption of the batch (see TextTransformer).
  r.forward_flops_per_sample = model->image_flops() + model->text->flops(eot.max().item<int64_t>() + 1);
  r.train_flops_per_sample = 3 * r.forward_flops_per_sample;
  r.optimizer_step = o.optimizer_step();
  r.grad_checkpointing = o.grad_checkpointing();

  r.world_size = o.group() ? o.group()->world_size() : 1;
  std::vector<double> times, reduce_times, forward_times, backward_times, optimizer_times, hidden_shares;
  auto since = [&](Clock::time_point t) {
    synchronize(device);
    return std::chrono::duration<double>(Clock::now() - t).count();
  };
  Progress progress(fmt::format("bench {} b{}", o.config(), B), o.warmup() + o.iters() + (o.profile().empty() ? 0 : 3), "step",
                    stderr);
  const int64_t timed_end = o.warmup() + o.iters(), profiled = o.profile().empty() ? 0 : 3;
  // The caching CPU allocator's counters over the timed steps.
  auto cache_stats = [] {
    CachingCpuAllocator* a = installed_cpu_caching_allocator();
    return a ? a->stats() : CpuCacheStats{};
  };
  CpuCacheStats cache_before, cache_after;
  for (int64_t i = 0; i < timed_end + profiled; ++i) {
    if (i == timed_end) {  // a few more steps under the profiler, outside the timings
      namespace prof = torch::autograd::profiler;
      const prof::ProfilerConfig config(prof::ProfilerState::KINETO, /*report_input_shapes=*/true);
      const std::set<prof::ActivityType> activities = {prof::ActivityType::CPU};
      prof::prepareProfiler(config, activities);
      prof::enableProfiler(config, activities);
    }
    synchronize(device);
    if (i == o.warmup()) cache_before = cache_stats();
    auto t0 = Clock::now();
    const StepResult sr = step.run({MicroBatch{images, ids}}, OptimCfg().lr());
    const double dt = since(t0);
    if (i >= o.warmup() && i < timed_end) {
      times.push_back(dt);
      forward_times.push_back(sr.forward_seconds);
      backward_times.push_back(sr.backward_seconds);
      optimizer_times.push_back(sr.optimizer_seconds);
      if (o.group()) {
        reduce_times.push_back(sr.reduce_seconds);
        hidden_shares.push_back(sr.allreduce_hidden_share);
      }
    }
    r.loss = sr.read().loss;  // after the timing: the step itself reads nothing back
    if (o.progress()) progress.advance(1, fmt::format("loss {:.4f}", r.loss));
    if (i + 1 == timed_end) cache_after = cache_stats();
  }
  if (o.progress()) progress.finish();
  r.cpu_cache = installed_cpu_caching_allocator() != nullptr;
  r.cpu_cache_allocations = static_cast<int64_t>(cache_after.allocations - cache_before.allocations);
  r.cpu_cache_hits = static_cast<int64_t>(cache_after.hits - cache_before.hits);
  r.cpu_cache_bytes = static_cast<int64_t>(cache_after.cached_bytes);
  if (profiled) {
    torch::autograd::profiler::disableProfiler()->save(o.profile());
    if (o.progress()) fmt::print(stderr, "profile of {} steps (Chrome trace): {}\n", profiled, o.profile());
  }
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  r.peak_rss_mb = usage.ru_maxrss / 1024.0;  // Linux reports KiB
  r.forward_seconds_median = median_of(forward_times);
  r.backward_seconds_median = median_of(backward_times);
  r.optimizer_seconds_median = median_of(optimizer_times);
  r.step_seconds_median = median_of(times);
  r.step_seconds_min = *std::min_element(times.begin(), times.end());
  r.samples_per_second = B * r.world_size / r.step_seconds_median;
  if (!reduce_times.empty()) r.allreduce_seconds_median = median_of(reduce_times);
  if (!hidden_shares.empty()) r.allreduce_hidden_share = median_of(hidden_shares);
  r.achieved_gflops = r.train_flops_per_sample * r.samples_per_second / 1e9;
  if (!o.group()) {  // ranks share the machine: its matmul rate is measured by one process
    r.matmul_gflops = measure_matmul_gflops(o.device(), o.precision());
    r.utilisation = r.achieved_gflops / r.matmul_gflops;
  }
  return r;
}

BenchTrainResult bench_train(BenchModelOptions o, const BenchTrainOptions& t) {
  TORCH_CHECK(t.rounds() >= 1, "bench train: --rounds must be >= 1, got ", t.rounds());
  o.optimizer_step(true);
  BenchTrainResult r;
  const std::string config_path = load_model_config(o.config()).source();
  // open_clip as users run it and, when asked, again with glibc's mmap/trim thresholds raised:
  // the nearest a Python process gets to our caching allocator without code.
  std::vector<std::string> envs = {std::string()};
  if (t.openclip_tuned_malloc()) envs.push_back(std::string(kOpenclipTunedMalloc) + " ");
  std::vector<BenchModelResult> ours;
  std::vector<double> openclip_steps;
  for (int64_t round = 0; round < t.rounds(); ++round) {
    ours.push_back(bench_model(o));
    r.ours_rounds.push_back(ours.back().samples_per_second);
    for (const std::string& env : envs) {
      const std::string cmd = fmt::format("{}{} {}/scripts/bench_openclip_train.py --config {} --batch {} --steps {} --warmup {} "
                                          "--threads {} --precision {} --device {}{}{} 2>&1",
                                          env, t.python(), TORCHCLIP_SOURCE_DIR, config_path, o.batch(), o.iters(), o.warmup(),
                                          ours.back().threads, o.precision(), parse_device(o.device()).str(),
                                          o.grad_checkpointing() ? " --grad-checkpointing" : "",
                                          t.openclip_compile() ? " --compile" : "");
      if (o.progress()) fmt::print(stderr, "open_clip training step: {}\n", cmd);
      int status = 0;
      const std::string out = run_command(cmd, status);
      const size_t brace = out.rfind("{\"step_seconds_median\"");
      if (status != 0 || brace == std::string::npos) {
        r.note = fmt::format("open_clip did not run (exit {}): {}", status, out.substr(0, 400));
        r.ours = ours.back();
        r.openclip_rounds.clear();
        r.openclip_tuned_rounds.clear();
        return r;
      }
      const double sps = json_number(out.substr(brace), "samples_per_second");
      if (env.empty()) {
        r.openclip_rounds.push_back(sps);
        openclip_steps.push_back(json_number(out.substr(brace), "step_seconds_median"));
      } else {
        r.openclip_tuned_rounds.push_back(sps);
      }
    }
  }
  const double ours_median = median_of(r.ours_rounds);
  for (const auto& round : ours)
    if (round.samples_per_second == ours_median) r.ours = round;
  r.openclip_samples_per_second = median_of(r.openclip_rounds);
  r.openclip_step_seconds = median_of(openclip_steps);
  r.openclip_tuned_samples_per_second = median_of(r.openclip_tuned_rounds);
  return r;
}

double BenchTrainResult::ratio() const { return median_ratio(ours_rounds, openclip_rounds); }
double BenchTrainResult::ratio_tuned_malloc() const { return median_ratio(ours_rounds, openclip_tuned_rounds); }

std::string BenchTrainResult::to_json() const {
  auto list = [](const std::vector<double>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += fmt::format("{}{:.4f}", i ? ", " : "", v[i]);
    return s + "]";
  };
  return fmt::format("{{\"torchclip\": {}, \"openclip_samples_per_second\": {:.4f}, \"openclip_step_seconds_median\": {:.6f}, "
                     "\"ratio\": {:.3f}, \"openclip_tuned_malloc_samples_per_second\": {:.4f}, \"ratio_tuned_malloc\": {:.3f}, "
                     "\"rounds\": {}, \"torchclip_rounds\": {}, \"openclip_rounds\": {}, \"openclip_tuned_malloc_rounds\": {}, "
                     "\"note\": {}}}",
                     torchclip::to_json(ours), openclip_samples_per_second, openclip_step_seconds, ratio(),
                     openclip_tuned_samples_per_second, ratio_tuned_malloc(), ours_rounds.size(), list(ours_rounds),
                     list(openclip_rounds), list(openclip_tuned_rounds), json_quote(note));
}

std::string BenchTrainResult::to_text() const {
  std::string s = torchclip::to_text(ours);
  if (openclip_rounds.empty()) return s + "  open_clip not measured: " + note + "\n";
  s += fmt::format("  open_clip training step {:>8.2f} samples/s   (median step {:.1f} ms)\n", openclip_samples_per_second,
                   openclip_step_seconds * 1e3);
  if (ours_rounds.size() > 1) {
    s += fmt::format("  rounds (torchclip / open_clip samples/s, alternating):");
    for (size_t i = 0; i < ours_rounds.size(); ++i) s += fmt::format(" {:.4g}/{:.4g}", ours_rounds[i], openclip_rounds[i]);
    s += "\n";
  }
  s += fmt::format("  ratio torchclip / open_clip {:.2f}x{}\n", ratio(),
                   ours_rounds.size() > 1 ? fmt::format(" (median of {} rounds)", ours_rounds.size()) : std::string());
  if (!openclip_tuned_rounds.empty())
    s += fmt::format("  open_clip, tuned malloc  {:>8.2f} samples/s   -> ratio {:.2f}x ({})\n", openclip_tuned_samples_per_second,
                     ratio_tuned_malloc(), kOpenclipTunedMalloc);
  return s;
}

std::string BenchScalingResult::to_json() const {
  return fmt::format("{{\"ranks\": {}, \"one_rank_samples_per_second\": {:.4f}, \"one_process_samples_per_second\": {:.4f}, "
                     "\"efficiency\": {:.4f}, \"vs_one_process\": {:.4f}}}",
                     torchclip::to_json(ranks), one_rank_samples_per_second, one_process_samples_per_second, efficiency(),
                     one_process_samples_per_second > 0 ? ranks.samples_per_second / one_process_samples_per_second : 0);
}

std::string BenchScalingResult::to_text() const {
  const int64_t n = ranks.world_size;
  return fmt::format(
      "model {} ({}), training step, batch {} per rank, {} timed steps\n"
      "  {} ranks x {} threads       {:>10.2f} samples/s   (median step {:.1f} ms; gradient all-reduce: {:.0f}% of its\n"
      "                              bytes done during backward, {:.1f} ms waited after it = {:.1f}% of the step)\n"
      "  1 process x {} threads      {:>10.2f} samples/s   -> scaling efficiency {:.1f}% (ideal: {} x this)\n"
      "  1 process, all cores        {:>10.2f} samples/s   -> {} ranks give {:.2f}x its throughput\n",
      ranks.config, ranks.precision, ranks.batch, ranks.iters, n, ranks.threads, ranks.samples_per_second,
      ranks.step_seconds_median * 1e3, 100 * ranks.allreduce_hidden_share, ranks.allreduce_seconds_median * 1e3,
      100 * ranks.allreduce_seconds_median / ranks.step_seconds_median, ranks.threads, one_rank_samples_per_second,
      100 * efficiency(), n, one_process_samples_per_second, n,
      one_process_samples_per_second > 0 ? ranks.samples_per_second / one_process_samples_per_second : 0);
}

std::string to_json(const BenchModelResult& r) {
  return fmt::format(
      "{{\"config\": {}, \"device\": \"{}\", \"precision\": \"{}\", \"batch\": {}, \"iters\": {}, "
      "\"threads\": {}, \"parameters\": {}, \"step_seconds_median\": {:.6f}, \"step_seconds_min\": {:.6f}, "
      "\"samples_per_second\": {:.4f}, \"forward_flops_per_sample\": {}, \"train_flops_per_sample\": {}, "
      "\"achieved_gflops\": {:.3f}, \"matmul_gflops\": {:.3f}, \"utilisation\": {:.4f}, \"loss\": {:.6f}, "
      "\"world_size\": {}, \"allreduce_seconds_median\": {:.6f}, \"allreduce_hidden_share\": {:.4f}, \"forward_seconds_median\": {:.6f}, "
      "\"backward_seconds_median\": {:.6f}, \"optimizer_seconds_median\": {:.6f}, \"cpu_cache\": {}, \"cpu_cache_allocations\": {}, "
      "\"cpu_cache_hits\": {}, \"cpu_cache_bytes\": {}, \"grad_checkpointing\": {}, \"peak_rss_mb\": {:.1f}}}",
      json_quote(r.config), r.device, r.precision, r.batch, r.iters, r.threads, r.parameters, r.step_seconds_median,
      r.step_seconds_min, r.samples_per_second, r.forward_flops_per_sample, r.train_flops_per_sample,
      r.achieved_gflops, r.matmul_gflops, r.utilisation, r.loss, r.world_size, r.allreduce_seconds_median, r.allreduce_hidden_share,
      r.forward_seconds_median, r.backward_seconds_median, r.optimizer_seconds_median, r.cpu_cache, r.cpu_cache_allocations, r.cpu_cache_hits, r.cpu_cache_bytes, r.grad_checkpointing, r.peak_rss_mb);
}

std::string to_text(const BenchModelResult& r) {
  return fmt::format(
      "model {} on {} ({}, {} threads), batch {}, {} timed steps\n"
      "  parameters            {:>12}\n"
      "  {:<21} {:>12.2f} samples/s   (median step {:.1f} ms, best {:.1f} ms)\n"
      "  phases (median)       forward+loss {:.1f} ms, backward {:.1f} ms{}\n"
      "  model FLOPs/sample    {:>12.3f} GFLOP forward, {:.3f} GFLOP train (3x)\n"
      "  achieved              {:>12.2f} GFLOP/s\n"
      "  machine matmul        {:>12.2f} GFLOP/s   -> utilisation {:.1f}%\n"
      "  peak memory           {:>12.0f} MB (process RSS){}\n{}",
      r.config, r.device, r.precision, r.threads, r.batch, r.iters, r.parameters,
      r.optimizer_step ? "training step" : "forward+backward", r.samples_per_second,
      r.step_seconds_median * 1e3, r.step_seconds_min * 1e3, r.forward_seconds_median * 1e3, r.backward_seconds_median * 1e3,
      r.optimizer_step ? fmt::format(", optimizer {:.1f} ms", r.optimizer_seconds_median * 1e3) : std::string(),
      r.forward_flops_per_sample / 1e9,
      r.train_flops_per_sample / 1e9, r.achieved_gflops, r.matmul_gflops, 100 * r.utilisation, r.peak_rss_mb,
      r.grad_checkpointing ? ", gradient checkpointing on" : "",
      r.device != "cpu" ? std::string()
      : !r.cpu_cache
          ? std::string("  CPU tensor cache      off (TORCHCLIP_CPU_CACHE=0)\n")
          : fmt::format("  CPU tensor cache      {:.1f}% of {} allocations >= 64 KiB reused per step, {:.0f} MB held\n",
                        r.cpu_cache_allocations ? 100.0 * r.cpu_cache_hits / r.cpu_cache_allocations : 0.0,
                        r.iters ? r.cpu_cache_allocations / r.iters : 0, r.cpu_cache_bytes / 1048576.0));
}

}  // namespace torchclip
