// `torchclip bench model`: forward+backward throughput of a CLIP config on synthetic data, with
// the model's FLOPs and this machine's measured matmul rate, so utilisation is visible.
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace torchclip {

namespace dist {
class Group;
}

struct BenchModelOptions {
  /// A configs/models name or a YAML path.
  TORCH_ARG(std::string, config) = "tiny";
  TORCH_ARG(int64_t, batch) = 8;
  TORCH_ARG(int64_t, warmup) = 2;
  TORCH_ARG(int64_t, iters) = 10;
  /// "fp32" or "bf16" (autocast).
  TORCH_ARG(std::string, precision) = "fp32";
  /// "cpu" or "cuda".
  TORCH_ARG(std::string, device) = "cpu";
  /// Intra-op threads; 0 keeps LibTorch's default.
  TORCH_ARG(int64_t, threads) = 0;
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(bool, progress) = true;
  /// Include the AdamW update and logit_scale clamp (a whole training step).
  TORCH_ARG(bool, optimizer_step) = false;
  /// Data parallel: this rank's batch is `batch`; the loss gathers features from every rank
  /// (local_loss + gather_with_grad) and gradients are averaged in buckets after backward.
  TORCH_ARG(std::shared_ptr<dist::Group>, group) = nullptr;
  /// Gradient all-reduce bucket size with a group (dist.bucket_mb).
  TORCH_ARG(double, bucket_mb) = 25;
  /// Recompute each residual block's activations in backward (train.grad_checkpointing).
  TORCH_ARG(bool, grad_checkpointing) = false;
  /// When set, 3 more steps run under LibTorch's (Kineto) profiler, saved here as a Chrome trace.
  TORCH_ARG(std::string, profile) = "";
};

struct BenchModelResult {
  std::string config, precision, device;
  int64_t batch = 0, iters = 0, threads = 0, parameters = 0;
  double step_seconds_median = 0, step_seconds_min = 0;
  double samples_per_second = 0;
  /// Forward FLOPs per (image, text) pair as computed: the text tower up to the batch's longest
  /// caption. A training step costs about 3x (forward + backward).
  int64_t forward_flops_per_sample = 0, train_flops_per_sample = 0;
  double achieved_gflops = 0;   // train_flops_per_sample * samples_per_second / 1e9
  double matmul_gflops = 0;     // this machine's measured square-matmul rate at this precision
  double utilisation = 0;       // achieved / matmul
  double loss = 0;              // last step's clip loss, as a sanity check
  bool optimizer_step = false;  // the timed step included the AdamW update
  int64_t world_size = 1;       // ranks; samples_per_second counts the whole job's samples
  double allreduce_seconds_median = 0;  // per step, the wait for gradient averaging after backward (world_size > 1)
  /// Median share of the gradient bytes whose all-reduce finished during backward (overlapped).
  double allreduce_hidden_share = 0;
  /// Medians of the step's phases: forward with the loss, backward, optimizer update.
  double forward_seconds_median = 0, backward_seconds_median = 0, optimizer_seconds_median = 0;
  /// The caching CPU allocator (util/cpu_allocator.h) over the timed steps: allocations of
  /// >= 64 KiB, how many reused a cached block, and the bytes cached at the end.
  bool cpu_cache = false;
  int64_t cpu_cache_allocations = 0, cpu_cache_hits = 0, cpu_cache_bytes = 0;
  /// Gradient checkpointing was on; the process's peak resident memory (getrusage) after the run.
  bool grad_checkpointing = false;
  double peak_rss_mb = 0;
};

BenchModelResult bench_model(const BenchModelOptions& options);

/// `torchclip bench train`: our training step (forward, CLIP loss, backward, AdamW) and, in the
/// same run, open_clip's on the same architecture, batch, precision and threads.
struct BenchTrainOptions {
  /// Alternate ours and open_clip this many times; the ratio is the median of the rounds'
  /// ratios, so a load change on a shared machine moves one round, not the result.
  TORCH_ARG(int64_t, rounds) = 1;
  /// Also run open_clip with MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ at 1 GiB: glibc
  /// then keeps freed tensor memory mapped, much as our caching CPU allocator
  /// (util/cpu_allocator.h) does, so the ratio without that effect shows too.
  TORCH_ARG(bool, openclip_tuned_malloc) = false;
  /// open_clip's model under torch.compile (the fastest way PyTorch users run it on a GPU).
  TORCH_ARG(bool, openclip_compile) = false;
  TORCH_ARG(std::string, python) = "python3";
};

struct BenchTrainResult {
  BenchModelResult ours;  // the round with the median samples/s
  /// samples/s per round: ours, open_clip, and open_clip with tuned malloc (when asked).
  std::vector<double> ours_rounds, openclip_rounds, openclip_tuned_rounds;
  double openclip_samples_per_second = 0, openclip_step_seconds = 0;  // medians over rounds
  double openclip_tuned_samples_per_second = 0;
  std::string note;  // why open_clip was not measured, if it was not
  /// Median over rounds of ours / open_clip (0 when open_clip did not run).
  double ratio() const;
  double ratio_tuned_malloc() const;
  std::string to_json() const;
  std::string to_text() const;
};
BenchTrainResult bench_train(BenchModelOptions options, const BenchTrainOptions& train = BenchTrainOptions());

/// `torchclip bench train --nproc N` on one machine: the training step of N ranks (each with
/// `batch` samples and cores / N threads) against one process with the same per-rank batch,
/// once with the same threads per rank and once with all cores.
struct BenchScalingResult {
  BenchModelResult ranks;            // rank 0's view of the N-rank job
  double one_rank_samples_per_second = 0;   // 1 process, cores / N threads
  double one_process_samples_per_second = 0;  // 1 process, all cores
  /// ranks / (N x one rank): weak-scaling efficiency with equal resources per rank.
  double efficiency() const {
    return one_rank_samples_per_second > 0 ? ranks.samples_per_second / (ranks.world_size * one_rank_samples_per_second) : 0;
  }
  std::string to_json() const;
  std::string to_text() const;
};

/// Square matmul rate in GFLOP/s on `device` in `precision` (best of a few timed runs).
double measure_matmul_gflops(const std::string& device, const std::string& precision, int64_t n = 1024);

std::string to_json(const BenchModelResult& r);
std::string to_text(const BenchModelResult& r);

}  // namespace torchclip
