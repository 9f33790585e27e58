// OpenCLIP interoperability: open_clip checkpoints (safetensors) into torchclip model folders.
#pragma once

#include "config.h"

#include <string>

namespace torchclip {

/// An open_clip model config: a JSON/YAML path, one of configs/models/, or the installed
/// open_clip's model_configs/NAME.json (found through python3). Throws naming what was tried.
ModelConfig openclip_model_config(const std::string& name_or_path);

/// Reads open_clip weights (safetensors, open_clip's state-dict names) for `config`, adapts the
/// config to what the file holds (a 0-D or 1-D logit_scale, a logit_bias), checks every tensor
/// by name and shape, and writes a model folder to `out` with the CLIP BPE tokenizer.
void convert_openclip(const ModelConfig& config, const std::string& weights, const std::string& out);

/// OpenCLIP's JSON model config for `config` (model_configs/*.json fields). Throws for
/// torchclip-only settings OpenCLIP cannot express (sinusoidal text positions).
std::string openclip_config_json(const ModelConfig& config);

/// Writes a model folder back for open_clip: PREFIX.safetensors (open_clip's state-dict names)
/// and PREFIX.json (the config, for open_clip.CLIP(**json)).
void export_openclip(const std::string& model_dir, const std::string& prefix);

}  // namespace torchclip
