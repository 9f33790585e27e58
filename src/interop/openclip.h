// OpenCLIP interoperability: open_clip checkpoints (safetensors) into torchclip model folders.
#pragma once

#include "config/model_config.h"

#include <ATen/core/Tensor.h>

#include <string>

namespace torchclip {

/// An open_clip model config: a JSON/YAML path (open_clip's model_configs/NAME.json) or one of
/// configs/models/. No Python runs: pass the path of an open_clip JSON that is not shipped here.
/// Throws naming what was tried.
ModelConfig openclip_model_config(const std::string& name_or_path);

/// Reads open_clip weights (safetensors, open_clip's state-dict names) for `config`, adapts the
/// config to what the file holds (a 0-D or 1-D logit_scale, a logit_bias), checks every tensor
/// by name and shape, and writes a model folder to `out` with the CLIP BPE tokenizer.
/// With `image_size` > 0 (a ViT only), the model is built for that size and the patch-position
/// grid of visual.positional_embedding is resized as open_clip's resize_pos_embed does
/// (antialiased bicubic, class token kept).
void convert_openclip(const ModelConfig& config, const std::string& weights, const std::string& out,
                      int64_t image_size = 0);

/// positional_embedding [1 + g*g, W] -> [1 + n*n, W] (grid n), open_clip's resize_pos_embed.
at::Tensor resize_pos_embed(const at::Tensor& pos, int64_t new_grid);

/// OpenCLIP's JSON model config for `config` (model_configs/*.json fields). Throws for
/// torchclip-only settings OpenCLIP cannot express (sinusoidal text positions).
std::string openclip_config_json(const ModelConfig& config);

/// Writes a model folder back for open_clip: PREFIX.safetensors (open_clip's state-dict names)
/// and PREFIX.json (the config, for open_clip.CLIP(**json)).
void export_openclip(const std::string& model_dir, const std::string& prefix);

}  // namespace torchclip
