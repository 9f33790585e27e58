// `torchclip train`: the pretraining loop as a library function, so tests call it directly.
#pragma once

#include "config/train_config.h"

#include <torch/arg.h>

#include <map>
#include <string>

namespace torchclip {

struct TrainRunOptions {
  TORCH_ARG(std::string, out_dir) = "runs/run";
  /// "" (start fresh; refuses a folder that has checkpoints), "auto" (newest valid checkpoint in
  /// out_dir, else fresh) or a checkpoint folder.
  TORCH_ARG(std::string, resume) = "";
  TORCH_ARG(bool, progress) = true;
  /// Stop after this many steps of this run (for tests; 0: no limit). The run is not finished.
  TORCH_ARG(int64_t, stop_after) = 0;
};

struct TrainRunResult {
  int64_t steps = 0;
  bool interrupted = false;           // SIGINT/SIGTERM: a checkpoint was saved
  std::string checkpoint;             // the last checkpoint written (a model folder)
  std::map<std::string, double> eval; // the final evaluation, if data.val is set
  double train_seconds = 0;           // time in training steps (no evaluation or checkpoints)
  int64_t nonfinite_steps = 0;
};

/// Trains; writes out_dir/{train_config.yaml, metrics.jsonl, plot.png, checkpoints/step-N/}.
/// Rank 0 holds an exclusive lock on out_dir/.lock for the run (a second training into the same
/// folder is refused naming the holder) and removes temporaries that interrupted writes left.
/// Throws on bad configuration or data, and after max_nonfinite_steps non-finite steps in a row.
TrainRunResult train(const TrainConfig& config, const TrainRunOptions& options);

/// Exit code of `torchclip train` when SIGINT/SIGTERM stopped it after saving a checkpoint.
constexpr int kExitInterrupted = 5;

}  // namespace torchclip
