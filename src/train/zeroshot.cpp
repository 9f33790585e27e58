#include "train/zeroshot.h"

#include "io/fsutil.h"
#include "io/safetensors.h"
#include "train/evaluate.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

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

ZeroShotClassifier ZeroShotClassifier::build(LoadedModel& m, const std::vector<std::string>& classes,
                                             const std::vector<std::string>& templates) {
  ZeroShotClassifier c;
  c.weights = zero_shot_classifier(m.model, *m.tokenizer, classes, templates, m.config.text_cfg().context_length());
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

ZeroShotReport zero_shot_report(const at::Tensor& probs, const std::vector<int64_t>& labels) {
  const int64_t N = probs.size(0), C = probs.size(1);
  TORCH_CHECK(static_cast<int64_t>(labels.size()) == N, "zero_shot_report: ", labels.size(), " labels for ", N, " rows");
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
    if (y < 0 || y >= C) continue;
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

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char ch : s) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return q + "\"";
}

void write_confusion_csv(const ZeroShotReport& r, const std::vector<std::string>& classes, const std::string& path) {
  const auto& field = csv_field;
  std::string out = "true/predicted";
  for (const auto& c : classes) out += "," + field(c);
  out += "\n";
  const int64_t C = static_cast<int64_t>(classes.size());
  for (int64_t i = 0; i < C; ++i) {
    out += field(classes[i]);
    for (int64_t j = 0; j < C; ++j) out += fmt::format(",{}", r.confusion[i][j].item<int64_t>());
    out += "\n";
  }
  write_file_atomic(path, out);
}

void write_confusion_png(const ZeroShotReport& r, const std::vector<std::string>& classes, const std::string& path) {
  const int C = static_cast<int>(classes.size());
    // Cells shrink with the class count (4 px for ImageNet's 1000); names need 12 px, counts 28.
  const int cell = std::max(4, std::min(56, 900 / std::max(1, C))), label_w = cell >= 12 ? 170 : 10,
            top = cell >= 12 ? 150 : 10;
  cv::Mat img(top + C * cell + 40, label_w + C * cell + 20, CV_8UC3, cv::Scalar(255, 255, 255));
  auto conf = r.confusion.to(at::kDouble);
  auto rows = conf.sum(1, true).clamp_min(1);
  auto share = (conf / rows).contiguous();  // [C, C] row-normalised
  const double* s = share.data_ptr<double>();
  const double font = cell >= 36 ? 0.4 : 0.3;
  for (int i = 0; i < C; ++i) {
    if (cell >= 12)
      cv::putText(img, classes[i].substr(0, 22), {6, top + i * cell + cell / 2 + 4}, cv::FONT_HERSHEY_SIMPLEX, 0.42,
                  {30, 30, 30}, 1, cv::LINE_AA);
    for (int j = 0; j < C; ++j) {
      const double v = s[i * C + j];
      const int shade = static_cast<int>(255 * (1 - v));
      cv::Rect box(label_w + j * cell, top + i * cell, cell - 1, cell - 1);
      cv::rectangle(img, box, cv::Scalar(255, shade, shade), cv::FILLED);  // white -> blue
      if (cell >= 28)
        cv::putText(img, fmt::format("{}", r.confusion[i][j].item<int64_t>()), {box.x + 3, box.y + cell / 2 + 4},
                    cv::FONT_HERSHEY_SIMPLEX, font, v > 0.5 ? cv::Scalar(255, 255, 255) : cv::Scalar(40, 40, 40), 1,
                    cv::LINE_AA);
    }
  }
  // Predicted class names, written vertically above the columns.
  for (int j = 0; j < C && cell >= 12; ++j) {
    cv::Mat label(std::min(20, cell), top - 10, CV_8UC3, cv::Scalar(255, 255, 255));
    cv::putText(label, classes[j].substr(0, 22), {2, std::min(14, cell - 3)}, cv::FONT_HERSHEY_SIMPLEX, 0.42, {30, 30, 30}, 1, cv::LINE_AA);
    cv::rotate(label, label, cv::ROTATE_90_COUNTERCLOCKWISE);
    const int x = label_w + j * cell + (cell - label.cols) / 2;
    label.copyTo(img(cv::Rect(x, 4, label.cols, label.rows)));
  }
  cv::putText(img, fmt::format("zero-shot confusion (rows: true class, columns: predicted), top-1 {:.2f}%", 100 * r.top1),
              {6, img.rows - 14}, cv::FONT_HERSHEY_SIMPLEX, 0.45, {30, 30, 30}, 1, cv::LINE_AA);
  if (!cv::imwrite(path, img)) throw std::runtime_error(fmt::format("{}: cannot write the heatmap PNG", path));
}

}  // namespace torchclip
