// Model folders: everything inference needs, in one directory.
//
// model.safetensors (OpenCLIP's state-dict names), config.yaml (the model config) and the
// tokenizer (tokenizer.yaml plus its vocabulary file). Training checkpoints are model folders
// with more files (train/checkpoint.h); every inference path loads them through this header.
#pragma once

#include "model/clip.h"
#include "text/tokenizer.h"

#include <map>
#include <memory>
#include <string>

namespace torchclip {

struct LoadedModel {
  ModelConfig config;
  CLIP model = nullptr;
  std::shared_ptr<const Tokenizer> tokenizer;
  std::string tokenizer_spec;
  std::string dir;  // the folder it was loaded from
  /// Identifies what the embeddings depend on: "crc32:W:BYTES:C:T", the CRC-32 and size of
  /// model.safetensors, the CRC-32 of the config (canonical YAML) and of the tokenizer's file.
  /// Indexes and saved classifiers record it, so using them with another model is refused.
  std::string fingerprint;
};

/// Writes a model folder (the folder must exist). `tokenizer_spec` is what load_tokenizer took.
void save_model_dir(const std::string& dir, CLIP& model, const std::string& tokenizer_spec);

/// Loads a model folder onto `device`; a folder without config.yaml, model.safetensors or
/// tokenizer.yaml, and missing, unexpected, mis-shaped, mis-typed or non-finite tensors are
/// errors naming them.
LoadedModel load_model_dir(const std::string& dir, const c10::Device& device = c10::Device(c10::kCPU));

/// Copies `weights` into `model` by name; throws listing missing, unexpected, mis-shaped,
/// mis-typed (integer data for float weights) and non-finite names.
void load_state_dict(CLIP& model, const std::map<std::string, at::Tensor>& weights, const std::string& source);

}  // namespace torchclip
