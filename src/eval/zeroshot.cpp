#include "eval/zeroshot.h"

#include "io/fsutil.h"
#include "io/safetensors.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <sstream>

namespace torchclip {

const std::vector<std::string>& openai_imagenet_templates() {
  static const std::vector<std::string> templates = {
      "a bad photo of a {}.",
      "a photo of many {}.",
      "a sculpture of a {}.",
      "a photo of the hard to see {}.",
      "a low resolution photo of the {}.",
      "a rendering of a {}.",
      "graffiti of a {}.",
      "a bad photo of the {}.",
      "a cropped photo of the {}.",
      "a tattoo of a {}.",
      "the embroidered {}.",
      "a photo of a hard to see {}.",
      "a bright photo of a {}.",
      "a photo of a clean {}.",
      "a photo of a dirty {}.",
      "a dark photo of the {}.",
      "a drawing of a {}.",
      "a photo of my {}.",
      "the plastic {}.",
      "a photo of the cool {}.",
      "a close-up photo of a {}.",
      "a black and white photo of the {}.",
      "a painting of the {}.",
      "a painting of a {}.",
      "a pixelated photo of the {}.",
      "a sculpture of the {}.",
      "a bright photo of the {}.",
      "a cropped photo of a {}.",
      "a plastic {}.",
      "a photo of the dirty {}.",
      "a jpeg corrupted photo of a {}.",
      "a blurry photo of the {}.",
      "a photo of the {}.",
      "a good photo of the {}.",
      "a rendering of the {}.",
      "a {} in a video game.",
      "a photo of one {}.",
      "a doodle of a {}.",
      "a close-up photo of the {}.",
      "a photo of a {}.",
      "the origami {}.",
      "the {} in a video game.",
      "a sketch of a {}.",
      "a doodle of the {}.",
      "a origami {}.",
      "a low resolution photo of a {}.",
      "the toy {}.",
      "a rendition of the {}.",
      "a photo of the clean {}.",
      "a photo of a large {}.",
      "a rendition of a {}.",
      "a photo of a nice {}.",
      "a photo of a weird {}.",
      "a blurry photo of a {}.",
      "a cartoon {}.",
      "art of a {}.",
      "a sketch of the {}.",
      "a embroidered {}.",
      "a pixelated photo of a {}.",
      "itap of the {}.",
      "a jpeg corrupted photo of the {}.",
      "a good photo of a {}.",
      "a plushie {}.",
      "a photo of the nice {}.",
      "a photo of the small {}.",
      "a photo of the weird {}.",
      "the cartoon {}.",
      "art of the {}.",
      "a drawing of the {}.",
      "a photo of the large {}.",
      "a black and white photo of a {}.",
      "the plushie {}.",
      "a dark photo of a {}.",
      "itap of a {}.",
      "graffiti of the {}.",
      "a toy {}.",
      "itap of my {}.",
      "a photo of a cool {}.",
      "a photo of a small {}.",
      "a tattoo of the {}."
  };
  return templates;
}

namespace {

std::string join_lines(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += s + "\n";
  return out;
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

}  // namespace

at::Tensor zero_shot_classifier(CLIP& model, const Tokenizer& tokenizer, const std::vector<std::string>& classes,
                                const std::vector<std::string>& templates, int64_t context_length) {
  TORCH_CHECK(!classes.empty() && !templates.empty(), "zero-shot: need at least one class and one template");
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> weights;
  for (const auto& c : classes) {
    std::vector<std::string> texts;
    for (const auto& t : templates) {
      const size_t p = t.find("{}");
      texts.push_back(p == std::string::npos ? t + " " + c : t.substr(0, p) + c + t.substr(p + 2));
    }
    auto ids = tokenize(tokenizer, texts, context_length).to(model->device());                // [T, ctx]
    auto f = model->encode_text(ids, /*normalize=*/true);                                    // [T, E]
    weights.push_back(l2_normalize(f.mean(0)));                                                   // [E]
  }
  return at::stack(weights, 1);  // [E, C]
}

ZeroShotClassifier ZeroShotClassifier::build(LoadedModel& m, const std::vector<std::string>& classes,
                                             const std::vector<std::string>& templates) {
  ZeroShotClassifier c;
  c.weights = zero_shot_classifier(m.model, *m.tokenizer, classes, templates, m.config.text_cfg().context_length()).cpu();
  c.classes = classes;
  c.templates = templates;
  c.model_fingerprint = m.fingerprint;
  return c;
}

void ZeroShotClassifier::save(const std::string& path) const {
  save_safetensors(path, {{"weights", weights}},
                   {{"format", "torchclip-zeroshot-classifier"}, {"version", "1"}, {"classes", join_lines(classes)},
                    {"templates", join_lines(templates)}, {"model_fingerprint", model_fingerprint}});
}

ZeroShotClassifier ZeroShotClassifier::load(const std::string& path, const std::string& expect_fingerprint) {
  auto f = load_safetensors(path, at::kFloat);
  auto meta = [&](const std::string& k) {
    auto it = f.metadata.find(k);
    if (it == f.metadata.end() || f.metadata["format"] != "torchclip-zeroshot-classifier")
      throw std::runtime_error(fmt::format("{}: not a zero-shot classifier written by torchclip zeroshot --save-classifier "
                                           "(no '{}' metadata)", path, k));
    return it->second;
  };
  ZeroShotClassifier c;
  c.classes = split_lines(meta("classes"));
  c.templates = split_lines(meta("templates"));
  c.model_fingerprint = meta("model_fingerprint");
  if (!f.tensors.count("weights") || f.tensors["weights"].dim() != 2 ||
      f.tensors["weights"].size(1) != static_cast<int64_t>(c.classes.size()))
    throw std::runtime_error(fmt::format("{}: 'weights' must be [E, {}] (one column per class)", path, c.classes.size()));
  c.weights = f.tensors["weights"];
  if (!expect_fingerprint.empty() && c.model_fingerprint != expect_fingerprint)
    throw std::runtime_error(fmt::format("{}: built by another model (fingerprint {}, this model {}); rebuild it with "
                                         "--save-classifier", path, c.model_fingerprint, expect_fingerprint));
  return c;
}

std::vector<std::string> parse_class_list(const std::string& arg) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(arg, ec)) return read_lines(arg);
  std::vector<std::string> out;
  std::string cur;
  for (char ch : arg + ",") {
    if (ch != ',') {
      cur += ch;
      continue;
    }
    const size_t b = cur.find_first_not_of(' '), e = cur.find_last_not_of(' ');
    if (b != std::string::npos) out.push_back(cur.substr(b, e - b + 1));
    cur.clear();
  }
  if (out.empty()) throw std::runtime_error(fmt::format("--classes '{}': no class names (a file, or names joined by commas)", arg));
  return out;
}

ZeroShotReport zero_shot_report(const at::Tensor& probs, const std::vector<int64_t>& labels,
                                const std::vector<std::string>& origins) {
  const int64_t N = probs.size(0), C = probs.size(1);
  TORCH_CHECK(static_cast<int64_t>(labels.size()) == N, "zero_shot_report: ", labels.size(), " labels for ", N, " rows");
  for (int64_t i = 0; i < N; ++i)
    if (labels[i] >= C)
      throw std::runtime_error(fmt::format("{}label {} is outside [0, {}]: there are {} classes, and labels are 0-based "
                                           "indices into the class list",
                                           static_cast<size_t>(i) < origins.size() ? origins[i] + ": " : "", labels[i], C - 1, C));
  ZeroShotReport r;
  r.n = N;
  r.confusion = at::zeros({C, C}, at::kLong);
  r.per_class.assign(C, std::numeric_limits<double>::quiet_NaN());
  r.per_class_count.assign(C, 0);
  auto top = std::get<1>(probs.topk(std::min<int64_t>(5, C), 1)).contiguous();  // [N, min(5, C)]
  auto* t = top.data_ptr<int64_t>();
  auto* conf = r.confusion.data_ptr<int64_t>();
  std::vector<int64_t> correct(C, 0);
  int64_t hit1 = 0, hit5 = 0;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t y = labels[i];
    if (y < 0) continue;
    ++r.labelled;
    ++r.per_class_count[y];
    const int64_t* row = t + i * top.size(1);
    conf[y * C + row[0]] += 1;
    if (row[0] == y) ++hit1, ++correct[y];
    for (int64_t k = 0; k < top.size(1); ++k) hit5 += row[k] == y;
  }
  if (r.labelled) {
    r.top1 = static_cast<double>(hit1) / r.labelled;
    r.top5 = static_cast<double>(hit5) / r.labelled;
  }
  for (int64_t c = 0; c < C; ++c)
    if (r.per_class_count[c]) r.per_class[c] = static_cast<double>(correct[c]) / r.per_class_count[c];
  return r;
}

}  // namespace torchclip
