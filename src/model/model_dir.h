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
  /// Identifies the weights: "crc32:XXXXXXXX:BYTES" of model.safetensors. Indexes record it, so
  /// a search with another model is refused.
  std::string fingerprint;
};

/// Writes a model folder (the folder must exist). `tokenizer_spec` is what load_tokenizer took.
void save_model_dir(const std::string& dir, CLIP& model, const std::string& tokenizer_spec);

/// Loads a model folder onto `device`; missing, unexpected or mis-shaped tensors are errors
/// naming them.
LoadedModel load_model_dir(const std::string& dir, const c10::Device& device = c10::Device(c10::kCPU));

/// Copies `weights` into `model` by name; throws listing missing, unexpected and mis-shaped names.
void load_state_dict(CLIP& model, const std::map<std::string, at::Tensor>& weights, const std::string& source);

}  // namespace torchclip
