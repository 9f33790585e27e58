// Training checkpoints.
//
// A checkpoint is a model folder (model/model_dir.h) plus trainer.safetensors (optimizer moments, RNG state) whose
// metadata records the step, epoch and loader position, and a MANIFEST of sizes and CRC-32s
// written last. Checkpoints are written into NAME.tmp, fsync'd, and renamed into place, so a crash
// leaves either the previous checkpoints or a complete new one.
#pragma once

#include "model/model_dir.h"

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace torch::optim {
class Optimizer;
}

namespace torchclip {

/// What the trainer needs back besides the model and optimizer.
struct TrainerState {
  int64_t step = 0, epoch = 0;
  /// Each rank's loader position (LoaderState::to_string), in rank order; one entry when the run
  /// was not distributed. Its size is the world size the checkpoint was written with.
  std::vector<std::string> loader_states;
  int64_t nonfinite_in_row = 0, nonfinite_total = 0;
  int64_t samples_seen = 0;
  double train_seconds = 0;
};

/// Writes checkpoint `root`/step-NNNNNNNN (atomically) and deletes all but the newest `keep`.
std::string save_checkpoint(const std::string& root, CLIP& model, torch::optim::Optimizer& optimizer,
                            const TrainerState& state, const std::string& tokenizer_spec,
                            const std::string& train_config_yaml, int64_t keep);

/// Checks a checkpoint's MANIFEST (sizes and CRC-32s). Returns an empty string when valid, else
/// what is wrong.
std::string validate_checkpoint(const std::string& dir);

/// The newest checkpoint under `root` that validates; each invalid one is reported on stderr and
/// skipped. nullopt when there is none.
std::optional<std::string> latest_checkpoint(const std::string& root);

/// Restores model weights, optimizer moments and the RNG from a checkpoint; returns its state.
/// With `keep_state`, only the parameters it accepts get their moments (a ZeRO or split-tower
/// rank restores the share it owns, never the whole state).
TrainerState load_checkpoint(const std::string& dir, CLIP& model, torch::optim::Optimizer& optimizer,
                             const std::function<bool(const at::Tensor&)>& keep_state = nullptr);

}  // namespace torchclip
