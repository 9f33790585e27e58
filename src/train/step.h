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

#include <functional>
#include <memory>
#include <string>
#include <utility>
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
  /// Model parallelism with a group of 2 (dist.towers): rank 0 runs the image tower and owns
  /// logit_scale, rank 1 the text tower; both get the same batch. The features meet on rank 0
  /// through an all-gather, rank 0 computes the loss and sends the text features' gradient back.
  TORCH_ARG(Towers, towers) = Towers::kTogether;
  /// Pipeline parallelism over `group` (dist.pipeline_stages, dist.micro_batches): the image
  /// tower's residual blocks cut into `pipeline_stages` contiguous runs of about equal length;
  /// rank r is stage r % S of replica r / S. Stage 0 also runs the stem; the last stage the head,
  /// the text tower, logit_scale (and logit_bias) and the loss. Each step's batch flows through
  /// the stages as `micro_batches` micro-batches, all forward, then all backward in reverse
  /// (GPipe's fill-drain), and the last stage computes the loss once over the whole batch.
  /// Replicas of a stage average their gradients, as data parallelism.
  TORCH_ARG(int64_t, pipeline_stages) = 1;
  TORCH_ARG(int64_t, micro_batches) = 1;
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
  /// After measure_activations_next_step(), on a CPU: the heap bytes the forward pass left
  /// allocated for backward (malloc's in-use bytes after the loss minus before the forward,
  /// the caching allocator's idle blocks excluded); -1 when not measured.
  int64_t activation_bytes = -1;
  /// Pipeline: [1 + S] double on the device, seconds: the span of this step's pipeline (from the
  /// barrier the stages start it with to the end of the last stage to finish), then each stage's
  /// busy time in it (forward, loss and backward, not the waits for a neighbour), means over
  /// replicas; a stage's idle share is 1 - busy / span. Measured on a CPU, and on a GPU with
  /// time_phases; undefined otherwise.
  at::Tensor pipeline_seconds;
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

  /// Each parameter has one owner rank (ZeRO: a share of the parameters; split towers: a
  /// tower). Without owners the calls below do nothing.
  bool sharded() const { return !owners_.empty(); }
  bool split_towers() const { return split_; }
  /// Pipeline: this rank's stage, and the image tower's blocks it runs, [begin, end).
  bool pipeline() const { return pipe_.stages > 1; }
  int64_t pipeline_stage() const { return pipe_.stage; }
  std::pair<int64_t, int64_t> stage_blocks() const { return {pipe_.begin, pipe_.end}; }
  /// Pipeline with replicas: the ranks that hold this rank's stage (the last stage's gathers the
  /// loss's negatives across replicas); nullptr otherwise.
  std::shared_ptr<dist::Group> replica_group() const { return replica_group_; }
  /// Collective: each rank sends the optimizer state of the parameters it owns to rank 0, which
  /// then holds the whole state, as one process would (before a checkpoint is written).
  void gather_optimizer_state();
  /// Drops the optimizer state of the parameters this rank does not own (after a checkpoint was
  /// written, or one holding every parameter's state was restored).
  void release_unowned_state();
  /// The parameters this rank updates (all of them without owners).
  std::vector<at::Tensor> owned_parameters() const;
  /// Whether this rank updates `param` (every parameter without owners).
  bool owns_parameter(const at::Tensor& param) const;
  /// Split towers or pipeline, collective: rank 0 receives the parameters it does not hold (and
  /// the other stages' buffers) before it saves a checkpoint or evaluates, so it holds the whole
  /// model until release_unowned_parameters().
  void gather_parameters();
  /// Split towers or pipeline: frees the parameters of the other ranks' towers or stages (their
  /// shapes are kept).
  void release_unowned_parameters();
  /// The model's logit_scale, on rank 0 (other ranks may get an empty tensor); collective when
  /// another rank owns it (a pipeline's last stage), so every rank calls it at the same points.
  at::Tensor logit_scale() const;
  /// Bytes of optimizer state (moments) and of parameters this rank holds, from the tensors.
  int64_t optimizer_state_bytes() const;
  int64_t parameter_bytes() const;
  /// The next run() measures activation_bytes.
  void measure_activations_next_step() { measure_activations_ = true; }

 private:
  CLIP model_;
  ContrastiveLoss loss_;
  torch::optim::Optimizer& optimizer_;
  StepOptions options_;
  bool owns(size_t k) const;
  /// Split towers: the features of both towers meet on rank 0 for the loss; returns the loss
  /// (rank 0; zero on rank 1) after both towers' backward.
  at::Tensor split_forward_backward(const MicroBatch& micro, StepResult& r, const std::function<void()>& measure);
  /// Pipeline: this stage's part of the GPipe schedule; returns the loss on the last stage (zero
  /// elsewhere) after this stage's backward, and fills r.pipeline_seconds' local part.
  at::Tensor pipeline_forward_backward(const MicroBatch& micro, StepResult& r, const std::function<void()>& measure);
  /// Whether parameters live on one rank only (split towers, pipeline stages), so ranks free
  /// the others' and rank 0 gathers them for checkpoints.
  bool places_parameters() const { return split_ || pipeline(); }

  std::vector<at::Tensor> params_;
  std::vector<std::vector<int64_t>> shapes_;  // [params] each parameter's shape, kept when it is freed
  std::unique_ptr<dist::GradientAverager> averager_;
  std::vector<int64_t> owners_;  // [params] the rank that updates each (pipeline: its stage,
                                 // replica 0's rank); empty: every rank all
  int64_t owner_id_ = 0;         // what owners_ holds for this rank's parameters
  bool split_ = false;
  struct PipelinePlace {
    int64_t stages = 1, stage = 0, replicas = 1, replica = 0, micro_batches = 1;
    int64_t begin = 0, end = 0;  // this stage's image blocks
  } pipe_;
  std::shared_ptr<dist::Group> replica_group_;
  std::vector<at::Tensor> buffers_;     // pipeline: the image tower's buffers (BatchNorm statistics)
  std::vector<int64_t> buffer_owners_;  // [buffers_] their stages
  bool measure_activations_ = false;
};

}  // namespace torchclip
