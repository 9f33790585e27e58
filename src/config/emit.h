// The effective config as YAML: every key of config/schema.h with its value, defaults included,
// so a run folder or checkpoint says exactly what ran. The text parses back to the same config.
#pragma once

#include "config/model_config.h"
#include "config/train_config.h"

#include <string>

namespace torchclip {

/// A model config (config.yaml in a model folder).
std::string to_yaml(const ModelConfig& cfg);

/// A training config (printed at start, RUN/train_config.yaml, every checkpoint).
std::string to_yaml(const TrainConfig& cfg);

}  // namespace torchclip
