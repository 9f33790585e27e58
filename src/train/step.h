// One training step, the body of OpenCLIP's train_one_epoch: forward over the micro-batches
// (with OpenCLIP's feature cache when accumulating), the loss, backward, gradient averaging over
// ranks, the global gradient norm and clipping, the non-finite guard, AdamW and the logit_scale
// clamp. `train()` and `bench train` run this same code, with the same parameter groups.
#pragma once

#include "config/train_config.h"
#include "loss/loss.h"
#include "model/clip.h"

#include <torch/arg.h>
#include <torch/optim/optimizer.h>

#include <memory>
#include <string>
#include <vector>

namespace torchclip {

namespace dist {
class Group;
class GradientAverager;
}  // namespace dist

/// The names in each AdamW group, as open_clip's main.py splits them: no weight decay for
/// parameters with fewer than two dimensions or whose names contain "bn", "ln", "bias" or
/// "logit_scale"; every other parameter (embeddings included) is decayed.
struct ParamGroupNames {
  std::vector<std::string> decay, no_decay;
};
ParamGroupNames param_group_names(CLIP& model);

/// The two AdamW groups (decay, no decay) with the options of `o`.
std::vector<torch::optim::OptimizerParamGroup> param_groups(CLIP& model, const OptimCfg& o);

/// One micro-batch of model inputs.
struct MicroBatch {
  at::Tensor images;  // [B, 3, S, S] float
  at::Tensor texts;   // [B, T] int64
};

struct StepOptions {
  TORCH_ARG(Precision, precision) = Precision::kFp32;
  /// Clip the global gradient norm to this; 0: off.
  TORCH_ARG(double, grad_clip) = 0.0;
  /// Data parallel: gradients are averaged over this group in buckets of `bucket_bytes`, and the
  /// logged loss and stop requests are combined over it. nullptr: one process.
  TORCH_ARG(std::shared_ptr<dist::Group>, group) = nullptr;
  TORCH_ARG(int64_t, bucket_bytes) = 25 << 20;
  /// ZeRO with a group: each rank updates only its share of the parameters (dist.shard), then
  /// receives the others' new values; with kGradients it also keeps only its share of the
  /// averaged gradients. The gradient norm (clipping, the non-finite guard) is the global one.
  TORCH_ARG(Shard, shard) = Shard::kNone;
  /// False: forward and backward only, gradients left in place (`bench model` measures this).
  TORCH_ARG(bool, update) = true;
  /// Wait for the device between phases so StepResult's phase times are exact (benchmarks).
  TORCH_ARG(bool, time_phases) = false;
};

/// A step's figures on the host (StepResult::read).
struct StepValues {
  double loss = 0, grad_norm = 0;
  bool applied = false, stop = false;
};

/// What a step leaves on its device: nothing is read back until read() (one copy, the only
/// device sync of a step; the trainer makes it at log points).
struct StepResult {
  /// 0-d double: the loss (the mean over ranks), and the global L2 norm of the averaged
  /// gradients before clipping.
  at::Tensor loss, grad_norm;
  /// 0-d float: 1 when the loss or a gradient was not finite, so parameters and optimizer were
  /// left untouched (the guard runs on the device: FusedAdamW's found_inf), else 0.
  at::Tensor skipped;
  /// 0-d double: > 0 when some rank asked to stop (run()'s `stop_requested`); every rank reads
  /// the same value at the same step.
  at::Tensor stop;
  StepValues read() const;
  /// Phase times in seconds: forward with the loss, backward, gradient averaging, the optimizer
  /// update with the clamp (exact only with StepOptions::time_phases on a GPU).
  double forward_seconds = 0, backward_seconds = 0, reduce_seconds = 0, optimizer_seconds = 0;
  /// Data parallel: the share of the gradient bytes whose all-reduce (started by the gradient
  /// hooks while backward ran) had finished when backward returned.
  double allreduce_hidden_share = 0;
  /// Bytes of the gradients this rank held after the reduction (all of them without ZeRO stage 2,
  /// its share with it): counted from the tensors, no device sync.
  int64_t gradient_bytes = 0;
};

class TrainStep {
 public:
  TrainStep(CLIP model, ContrastiveLoss loss, torch::optim::Optimizer& optimizer, StepOptions options = {});
  ~TrainStep();
  TrainStep(const TrainStep&) = delete;
  TrainStep& operator=(const TrainStep&) = delete;

  /// Runs one step over `micro` (one micro-batch, or accum_steps of them) at learning rate `lr`.
  /// With several micro-batches the loss sees every micro-batch's features, as OpenCLIP's
  /// accumulation does: features of all of them without gradient, then each again with gradient
  /// in its own slot, backward after each.
  StepResult run(const std::vector<MicroBatch>& micro, double lr, bool stop_requested = false);

  const StepOptions& options() const { return options_; }

  /// ZeRO (a group and dist.shard other than none). Without it the three calls below do nothing.
  bool sharded() const;
  /// Collective: each rank sends the optimizer state of the parameters it owns to rank 0, which
  /// then holds the whole state, as one process would (before a checkpoint is written).
  void gather_optimizer_state();
  /// Drops the optimizer state of the parameters this rank does not own (after a checkpoint was
  /// written, or one holding every parameter's state was restored).
  void release_unowned_state();
  /// Bytes of optimizer state this rank holds (moments), counted from the tensors.
  int64_t optimizer_state_bytes() const;

 private:
  CLIP model_;
  ContrastiveLoss loss_;
  torch::optim::Optimizer& optimizer_;
  StepOptions options_;
  std::vector<at::Tensor> params_;
  std::unique_ptr<dist::GradientAverager> averager_;
};

}  // namespace torchclip
