// The training configuration (configs/train/*.yaml): model, data, loss, optimiser, schedule and
// loop settings. Keys, types and ranges are listed once in config/schema.h; the same list reads
// the YAML and writes the effective config back (config/emit.h).
#pragma once

#include "config/loss_config.h"
#include "config/model_config.h"

#include <torch/arg.h>

#include <array>
#include <string>
#include <vector>

namespace torchclip {

using Pair = std::array<double, 2>;

struct DataCfg {
  TORCH_ARG(std::string, train) = "";
  /// Labelled evaluation data (zero-shot and retrieval); empty: no evaluation.
  TORCH_ARG(std::string, val) = "";
  TORCH_ARG(std::string, csv_img_key) = "filepath";
  TORCH_ARG(std::string, csv_caption_key) = "title";
  TORCH_ARG(std::string, csv_label_key) = "label";
  /// "" picks by extension (',' for .csv, tab otherwise).
  TORCH_ARG(std::string, csv_separator) = "";
  /// Zero-shot class names (one per line) and prompt templates ("{}" is the class).
  TORCH_ARG(std::string, classes) = "";
  TORCH_ARG(std::string, templates) = "";
  TORCH_ARG(int64_t, batch_size) = 64;
  TORCH_ARG(int64_t, workers) = 2;
  TORCH_ARG(int64_t, shuffle_buffer) = 1000;
  TORCH_ARG(Pair, scale) = {0.9, 1.0};
  /// Image resizing: pil (Pillow's bicubic, byte-exact with open_clip) or fast (OpenCV).
  TORCH_ARG(ResizeMode, resize) = ResizeMode::kPil;
  /// Where images are normalised (worker: float batches; device: uint8 batches); auto: device on CUDA.
  TORCH_ARG(NormalizeOn, normalize) = NormalizeOn::kAuto;
  TORCH_ARG(int64_t, max_consecutive_failures) = 100;
};

struct OptimCfg {
  TORCH_ARG(double, lr) = 5e-4;
  TORCH_ARG(Pair, betas) = {0.9, 0.98};
  TORCH_ARG(double, eps) = 1e-6;
  TORCH_ARG(double, weight_decay) = 0.2;
};

struct ScheduleCfg {
  TORCH_ARG(ScheduleKind, name) = ScheduleKind::kCosine;
  TORCH_ARG(int64_t, warmup_steps) = 100;
  /// const-cooldown: linear decay to min_lr over the last cooldown_steps.
  TORCH_ARG(int64_t, cooldown_steps) = 0;
  TORCH_ARG(double, min_lr) = 0.0;
};

struct LoopCfg {
  /// Train for `steps` optimizer steps, or, when 0, for `epochs` passes over the data.
  TORCH_ARG(int64_t, epochs) = 1;
  TORCH_ARG(int64_t, steps) = 0;
  /// auto (cuda:LOCAL_RANK when CUDA is available, else cpu), cpu, cuda or cuda:N.
  TORCH_ARG(std::string, device) = "auto";
  /// fp32, or bf16 autocast.
  TORCH_ARG(Precision, precision) = Precision::kFp32;
  /// On CUDA, fp32 matrix products and convolutions use TensorFloat-32 (as PyTorch users set
  /// with torch.backends.cuda.matmul.allow_tf32). No effect on CPU.
  TORCH_ARG(bool, tf32) = true;
  /// Clip the global gradient norm to this; 0: off.
  TORCH_ARG(double, grad_clip) = 0.0;
  /// Recompute each residual block's activations in backward (OpenCLIP's --grad-checkpointing).
  TORCH_ARG(bool, grad_checkpointing) = false;
  /// Micro-batches per step; features are cached so negatives span all of them (OpenCLIP).
  TORCH_ARG(int64_t, accum_steps) = 1;
  TORCH_ARG(uint64_t, seed) = 0;
  /// Intra-op threads; 0 keeps LibTorch's default.
  TORCH_ARG(int64_t, threads) = 0;
  /// Steps between evaluations / checkpoints; 0: only at the end.
  TORCH_ARG(int64_t, eval_every) = 0;
  TORCH_ARG(int64_t, checkpoint_every) = 0;
  TORCH_ARG(int64_t, keep_checkpoints) = 3;
  /// Training stops after this many non-finite steps in a row.
  TORCH_ARG(int64_t, max_nonfinite_steps) = 10;
  /// Steps between metrics.jsonl lines and progress updates (the last step is always logged).
  TORCH_ARG(int64_t, log_every) = 1;
};

/// Data-parallel settings; used when a launcher (torchrun, srun, `--nproc`) sets WORLD_SIZE > 1.
struct DistCfg {
  /// auto (gloo on CPU, nccl on CUDA), gloo or nccl.
  TORCH_ARG(Backend, backend) = Backend::kAuto;
  /// Rendezvous and each collective fail after this many seconds (a dead or missing rank).
  TORCH_ARG(double, timeout_seconds) = 300;
  /// Gradient all-reduce bucket size.
  TORCH_ARG(double, bucket_mb) = 25;
  /// Every N steps, verify all ranks hold bit-identical parameters (0: never).
  TORCH_ARG(int64_t, check_every) = 0;
  /// ZeRO: each rank keeps the AdamW moments of its share of the parameters (optimizer), and
  /// also only its share of the averaged gradients (gradients); none: every rank holds all.
  TORCH_ARG(Shard, shard) = Shard::kNone;
  /// split: the image tower (and logit_scale) on rank 0, the text tower on rank 1; both read
  /// the same batches. Needs exactly 2 ranks (check_layout).
  TORCH_ARG(Towers, towers) = Towers::kTogether;
  /// Pipeline parallelism: the image tower's residual blocks cut into this many stages on as
  /// many ranks (the stem on the first, the head, the text tower and the loss on the last); the
  /// world is stages x data-parallel replicas. 1: off.
  TORCH_ARG(int64_t, pipeline_stages) = 1;
  /// Pipeline parallelism: each batch flows through the stages as this many micro-batches
  /// (GPipe's fill-drain schedule); the loss still sees the whole batch. Divides data.batch_size.
  TORCH_ARG(int64_t, micro_batches) = 1;
};

struct TrainConfig {
  TORCH_ARG(std::string, source) = "<defaults>";
  /// The model config's name or path as written, and the parsed config.
  TORCH_ARG(std::string, model_name) = "tiny";
  TORCH_ARG(ModelConfig, model) = {};
  TORCH_ARG(std::string, tokenizer) = "clip-bpe";
  TORCH_ARG(DataCfg, data) = {};
  TORCH_ARG(LossConfig, loss) = {};
  TORCH_ARG(OptimCfg, optim) = {};
  TORCH_ARG(ScheduleCfg, schedule) = {};
  TORCH_ARG(LoopCfg, train) = {};
  TORCH_ARG(DistCfg, dist) = {};
};

/// Reads a training config, applying dotted overrides ("optim.lr=1e-3") first. Unknown keys,
/// wrong types and impossible values throw ConfigError naming the file, line and key.
TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides = {});

/// Whether the config's parallel layout can run on `world_size` ranks; throws ConfigError naming
/// the dist key and what would work (split towers need exactly 2 ranks, no dist.shard and
/// train.accum_steps 1; a pipeline needs a world divisible by its stages, no more stages than the
/// image tower has residual blocks, micro-batches that divide the batch). Called before any rank starts, and by every rank before it trains.
void check_layout(const TrainConfig& cfg, int64_t world_size);


}  // namespace torchclip
