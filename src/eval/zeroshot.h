// Zero-shot classification as a tool (`torchclip zeroshot`): a classifier built from class names
// and prompt templates (saved and reused as safetensors), per-image top-k probabilities, and with
// labels top-1/top-5, per-class accuracy and a confusion matrix (CSV and PNG heatmap).
#pragma once

#include "model/model_dir.h"

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace torchclip {

/// OpenAI's 80 ImageNet prompt templates ("{}" is the class), as open_clip's
/// OPENAI_IMAGENET_TEMPLATES; the golden test checks the list against open_clip.
const std::vector<std::string>& openai_imagenet_templates();

/// Normalised classifier weights [E, C] from class names and templates ("{}" is replaced).
at::Tensor zero_shot_classifier(CLIP& model, const Tokenizer& tokenizer, const std::vector<std::string>& classes,
                                const std::vector<std::string>& templates, int64_t context_length);

struct ZeroShotClassifier {
  at::Tensor weights;  // [E, C] normalised, templates averaged per class
  std::vector<std::string> classes, templates;
  std::string model_fingerprint;

  /// Encodes every class x template with `m` (the model's tokenizer and context length).
  static ZeroShotClassifier build(LoadedModel& m, const std::vector<std::string>& classes,
                                  const std::vector<std::string>& templates);
  /// safetensors: "weights" plus classes, templates and the model fingerprint as metadata.
  void save(const std::string& path) const;
  /// Throws naming the file when it is not a classifier or was built by another model.
  static ZeroShotClassifier load(const std::string& path, const std::string& expect_fingerprint);
};

/// "a,b,c" or a file with one class per line (a path that exists is read as a file).
std::vector<std::string> parse_class_list(const std::string& arg);

struct ZeroShotReport {
  int64_t n = 0, labelled = 0;
  double top1 = 0, top5 = 0;            // fractions over the labelled images
  std::vector<double> per_class;        // [C] accuracy, NaN where a class has no image
  std::vector<int64_t> per_class_count;
  at::Tensor confusion;                 // [C, C] counts, true class rows
};

/// probs [N, C] and labels [N] (negative: unlabelled, skipped). A label >= C is an error naming
/// where the row came from (`origins` [N], "file.csv:12"; may be empty) and the class count:
/// 1-based labels or a class list that does not match the data must not be scored as misses.
ZeroShotReport zero_shot_report(const at::Tensor& probs, const std::vector<int64_t>& labels,
                                const std::vector<std::string>& origins = {});

}  // namespace torchclip
