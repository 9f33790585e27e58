// Model configs. Every YAML file torchclip reads is turned into typed structs by the config
// module (src/config/) and nowhere else; the keys of each struct are listed once, in
// config/schema.h, for the reader and the emitter (config/emit.h) alike. Field names are OpenCLIP's (model_configs/*.json), so a user can
// read an OpenCLIP config and ours side by side.
#pragma once

#include "config/enums.h"

#include <torch/arg.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace YAML {
class Node;
}

namespace torchclip {

/// Thrown for any bad configuration. The message names the file, the line and the dotted key,
/// and what is allowed.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Image tower: a VisionTransformer, or OpenCLIP's ModifiedResNet when `layers` has four entries.
struct VisionCfg {
  /// One entry: ViT depth. Four entries: ResNet stage depths, e.g. [3, 4, 6, 3].
  TORCH_ARG(std::vector<int64_t>, layers) = {12};
  TORCH_ARG(int64_t, width) = 768;
  /// heads = width / head_width (ViT) or width * 32 / head_width (ResNet attention pool).
  TORCH_ARG(int64_t, head_width) = 64;
  TORCH_ARG(double, mlp_ratio) = 4.0;
  TORCH_ARG(int64_t, patch_size) = 16;
  TORCH_ARG(int64_t, image_size) = 224;
  TORCH_ARG(std::optional<double>, ls_init_value) = std::nullopt;
  TORCH_ARG(double, patch_dropout) = 0.0;
  TORCH_ARG(bool, no_ln_pre) = false;
  /// Class token or the mean of the patch tokens.
  TORCH_ARG(VisionPool, pool_type) = VisionPool::kTok;
  TORCH_ARG(bool, final_ln_after_pool) = false;

 public:
  bool is_resnet() const { return layers_.size() == 4; }
  int64_t heads() const { return is_resnet() ? width_ * 32 / head_width_ : width_ / head_width_; }
  int64_t grid_size() const { return image_size_ / patch_size_; }
};

/// Text tower: a causal Transformer over BPE or SentencePiece ids.
struct TextCfg {
  TORCH_ARG(int64_t, context_length) = 77;
  TORCH_ARG(int64_t, vocab_size) = 49408;
  TORCH_ARG(int64_t, width) = 512;
  TORCH_ARG(int64_t, heads) = 8;
  TORCH_ARG(int64_t, layers) = 12;
  TORCH_ARG(double, mlp_ratio) = 4.0;
  TORCH_ARG(std::optional<double>, ls_init_value) = std::nullopt;
  TORCH_ARG(int64_t, pad_id) = 0;
  /// Used by pool_type "eos" only; must match the tokenizer's end-of-text id.
  TORCH_ARG(int64_t, eos_id) = 2;
  TORCH_ARG(bool, no_causal_mask) = false;
  /// argmax (position of the largest id: CLIP's EOT), eos, first, last.
  TORCH_ARG(TextPool, pool_type) = TextPool::kArgmax;
  TORCH_ARG(bool, proj_bias) = false;
  TORCH_ARG(TextProj, proj_type) = TextProj::kLinear;
  /// torchclip extension: learnable (OpenCLIP) or sinusoidal (Vaswani et al. 2017, fixed,
  /// not saved in the state dict).
  TORCH_ARG(PosEmbed, pos_embed_type) = PosEmbed::kLearnable;
};

/// A CLIP model: OpenCLIP's top-level config fields.
struct ModelConfig {
  /// Where it came from (file path), for messages.
  TORCH_ARG(std::string, source) = "<defaults>";
  TORCH_ARG(int64_t, embed_dim) = 512;
  TORCH_ARG(bool, quick_gelu) = false;
  /// OpenCLIP's CustomTextCLIP: text weights live under "text." instead of at the root.
  TORCH_ARG(bool, custom_text) = false;
  TORCH_ARG(double, init_logit_scale) = std::log(1.0 / 0.07);
  TORCH_ARG(std::optional<double>, init_logit_bias) = std::nullopt;
  TORCH_ARG(bool, nonscalar_logit_scale) = false;
  TORCH_ARG(VisionCfg, vision_cfg) = {};
  TORCH_ARG(TextCfg, text_cfg) = {};
};

/// Reads a model config from a YAML file, or by name from configs/models/NAME.yaml.
/// Unknown keys, wrong types and impossible values throw ConfigError naming file, line and key.
ModelConfig load_model_config(const std::string& path_or_name);

/// Parses a model config from an already-loaded YAML node; `source` names it in errors.
ModelConfig parse_model_config(const YAML::Node& node, const std::string& source);

/// Checks cross-field constraints (divisibility, ranges, choices). Throws ConfigError.
void validate(const ModelConfig& cfg);

/// The names of the model configs shipped in configs/models/, sorted.
std::vector<std::string> model_config_names();

/// The folder holding configs/ (env TORCHCLIP_CONFIGS, else the source tree's configs/).
std::string configs_dir();

}  // namespace torchclip
