// Evaluation as OpenCLIP reports it: zero-shot classification (class names x prompt templates,
// text features averaged over templates and renormalised, logits = 100 img @ W, top-1 and
// top-5) and image<->text retrieval (R@1/5/10, mean and median rank), computed in chunks so a
// large evaluation set never needs its whole similarity matrix in memory.
#pragma once

#include "data/loader.h"
#include "model/clip.h"

#include <map>
#include <string>
#include <vector>

namespace torchclip {

/// Loader options for inference with a model of `cfg`: its eval transform (image size,
/// `resize` "pil" or "fast"), inputs in order, the last partial batch kept.
data::LoaderOptions inference_loader_options(const ModelConfig& cfg, int64_t batch_size, int64_t workers,
                                             const std::string& resize = "pil");

/// Normalised classifier weights [E, C] from class names and templates ("{}" is replaced).
at::Tensor zero_shot_classifier(CLIP& model, const Tokenizer& tokenizer, const std::vector<std::string>& classes,
                                const std::vector<std::string>& templates, int64_t context_length);

/// Retrieval metrics between paired features [N, E] (row i of each is a pair), under OpenCLIP's
/// names: image_to_text_R@{1,5,10}, text_to_image_R@{1,5,10}, *_mean_rank, *_median_rank.
/// A row's rank counts the candidates scoring strictly higher than its pair.
std::map<std::string, double> retrieval_metrics(const at::Tensor& image_features, const at::Tensor& text_features,
                                                int64_t chunk = 1024);

struct EvalResult {
  std::map<std::string, double> metrics;  // zeroshot_top1, zeroshot_top5, retrieval names, n
  at::Tensor confusion;                   // [C, C] counts (true class rows), when zero-shot ran
};

/// Runs over every sample of `loader` (an evaluation loader: eval transform, no shuffling).
/// Zero-shot needs labels and non-empty `classes`; retrieval uses the captions.
EvalResult evaluate(CLIP& model, const Tokenizer& tokenizer, data::Loader& loader, const std::vector<std::string>& classes,
                    const std::vector<std::string>& templates, bool bf16 = false, bool progress = true);

/// Normalised image embeddings of every sample of `loader`, with where each came from.
struct ImageEmbeddings {
  at::Tensor features;  // [N, E]
  std::vector<std::string> origins, paths, captions;
  std::vector<int64_t> labels;
};
ImageEmbeddings embed_images(CLIP& model, data::Loader& loader, bool progress = true);

/// The k rows of `features` [N, E] most similar to `query` [E]: (row, cosine similarity).
std::vector<std::pair<int64_t, float>> nearest(const at::Tensor& features, const at::Tensor& query, int64_t k);

/// A contact sheet: one tile per image path with its rank and score. Throws naming the file.
void write_contact_sheet(const std::vector<std::string>& paths, const std::vector<float>& scores, const std::string& title,
                         const std::string& png);

/// Lines of a text file (class names, templates), skipping empty ones. Throws naming the file.
std::vector<std::string> read_lines(const std::string& path);

}  // namespace torchclip
