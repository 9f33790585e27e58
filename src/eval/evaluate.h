// Evaluation as OpenCLIP reports it, over an evaluation loader: zero-shot classification
// (eval/zeroshot.h) and image<->text retrieval (eval/retrieval.h); and the embedding loop that
// indexing and the tools share.
#pragma once

#include "data/loader.h"
#include "model/clip.h"

#include <map>
#include <string>
#include <vector>

namespace torchclip {

/// Loader options for inference with a model of `cfg`: its eval transform (image size,
/// `resize`), inputs in order, the last partial batch kept.
data::LoaderOptions inference_loader_options(const ModelConfig& cfg, int64_t batch_size, int64_t workers,
                                             ResizeMode resize = ResizeMode::kPil);

struct EvalResult {
  std::map<std::string, double> metrics;  // zeroshot_top1, zeroshot_top5, retrieval names, n
  at::Tensor confusion;                   // [C, C] counts (true class rows), when zero-shot ran
};

/// Runs over every sample of `loader` (an evaluation loader: eval transform, no shuffling).
/// Zero-shot needs labels and non-empty `classes`; retrieval uses the captions. A loader with no
/// usable sample is an error saying why (the skip counts by reason).
EvalResult evaluate(CLIP& model, const Tokenizer& tokenizer, data::Loader& loader, const std::vector<std::string>& classes,
                    const std::vector<std::string>& templates, bool bf16 = false, bool progress = true);

/// The error for a loader that gave no usable image: its source and the skip counts by reason.
std::string no_usable_images(const data::Loader& loader);

/// Normalised image embeddings of every sample of `loader`, with where each came from.
struct ImageEmbeddings {
  at::Tensor features;  // [N, E]
  std::vector<std::string> origins, paths, captions;
  std::vector<int64_t> labels;
};
ImageEmbeddings embed_images(CLIP& model, data::Loader& loader, bool progress = true);

}  // namespace torchclip
