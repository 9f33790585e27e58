#include "train/evaluate.h"

#include "util/autocast.h"
#include "util/progress.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace torchclip {

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error(fmt::format("{}: cannot open the file", path));
  std::vector<std::string> out;
  for (std::string line; std::getline(f, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

data::LoaderOptions inference_loader_options(const ModelConfig& cfg, int64_t batch_size, int64_t workers,
                                             const std::string& resize) {
  return data::LoaderOptions()
      .batch_size(batch_size)
      .workers(workers)
      .shuffle(false)
      .drop_last(false)
      .context_length(cfg.text_cfg().context_length())
      .transform(data::ImageTransformOptions()
                     .image_size(cfg.vision_cfg().image_size())
                     .resize(data::parse_resize_mode(resize, "--resize")));
}

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
    auto f = model->encode_text(tokenize(tokenizer, texts, context_length), /*normalize=*/true);  // [T, E]
    weights.push_back(l2_normalize(f.mean(0)));                                                   // [E]
  }
  return at::stack(weights, 1);  // [E, C]
}

std::map<std::string, double> retrieval_metrics(const at::Tensor& img, const at::Tensor& txt, int64_t chunk) {
  TORCH_CHECK(img.sizes() == txt.sizes() && img.dim() == 2, "retrieval: expected paired features [N, E]");
  const int64_t N = img.size(0);
  std::map<std::string, double> out;
  auto direction = [&](const at::Tensor& q, const at::Tensor& k, const std::string& name) {
    std::vector<at::Tensor> ranks;
    for (int64_t s = 0; s < N; s += chunk) {
      const int64_t e = std::min(N, s + chunk);
      auto sims = at::matmul(q.slice(0, s, e), k.t());                        // [chunk, N]
      auto own = sims.gather(1, at::arange(s, e, at::kLong).unsqueeze(1));    // [chunk, 1]
      ranks.push_back(sims.gt(own).sum(1));                                   // [chunk], 0-based rank
    }
    auto r = at::cat(ranks).to(at::kDouble);
    for (int k_ : {1, 5, 10}) out[fmt::format("{}_R@{}", name, k_)] = r.lt(k_).to(at::kDouble).mean().item<double>();
    out[name + "_mean_rank"] = r.mean().item<double>() + 1;
    out[name + "_median_rank"] = std::floor(std::get<0>(r.median(0)).item<double>()) + 1;
  };
  direction(img, txt, "image_to_text");
  direction(txt, img, "text_to_image");
  return out;
}

EvalResult evaluate(CLIP& model, const Tokenizer& tokenizer, data::Loader& loader, const std::vector<std::string>& classes,
                    const std::vector<std::string>& templates, bool bf16, bool progress) {
  const bool was_training = model->is_training();
  model->eval();
  torch::NoGradGuard no_grad;
  EvalResult r;
  at::Tensor classifier;
  const int64_t ctx = model->config.text_cfg().context_length();
  if (!classes.empty()) classifier = zero_shot_classifier(model, tokenizer, classes, templates, ctx);
  std::vector<at::Tensor> image_features, text_features;
  int64_t correct1 = 0, correct5 = 0, labelled = 0;
  const int64_t C = static_cast<int64_t>(classes.size());
  if (C) r.confusion = at::zeros({C, C}, at::kLong);
  loader.start_epoch(0);
  Progress bar("eval", 0, "img");
  for (data::Batch b; loader.next(b);) {
    at::Tensor img, txt;
    {
      AutocastGuard autocast(at::kCPU, bf16);
      img = model->encode_image(b.images, true).to(at::kFloat);
      txt = model->encode_text(b.texts, true).to(at::kFloat);
    }
    image_features.push_back(img);
    text_features.push_back(txt);
    if (C) {
      auto valid = b.labels.ge(0).logical_and(b.labels.lt(C));
      if (valid.any().item<bool>()) {
        auto logits = 100.0 * at::matmul(img.index({valid}), classifier);  // [n, C]
        auto labels = b.labels.index({valid});
        auto top = std::get<1>(logits.topk(std::min<int64_t>(5, C), 1));   // [n, 5]
        auto hit = top.eq(labels.unsqueeze(1));
        correct1 += hit.select(1, 0).sum().item<int64_t>();
        correct5 += hit.any(1).sum().item<int64_t>();
        labelled += labels.size(0);
        auto pred = top.select(1, 0);
        r.confusion.index_put_({labels, pred}, at::ones_like(labels), /*accumulate=*/true);
      }
    }
    if (progress) bar.advance(b.images.size(0));
  }
  if (progress) bar.finish();
  if (labelled) {
    r.metrics["zeroshot_top1"] = static_cast<double>(correct1) / labelled;
    r.metrics["zeroshot_top5"] = static_cast<double>(correct5) / labelled;
  }
  if (!image_features.empty()) {
    auto ret = retrieval_metrics(at::cat(image_features), at::cat(text_features));
    r.metrics.insert(ret.begin(), ret.end());
    r.metrics["n"] = static_cast<double>(at::cat(image_features).size(0));
  }
  if (was_training) model->train();
  return r;
}

ImageEmbeddings embed_images(CLIP& model, data::Loader& loader, bool progress) {
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  ImageEmbeddings e;
  std::vector<at::Tensor> parts;
  loader.start_epoch(0);
  Progress bar("embed", 0, "img");
  for (data::Batch b; loader.next(b);) {
    parts.push_back(model->encode_image(b.images, true));
    e.origins.insert(e.origins.end(), b.origins.begin(), b.origins.end());
    e.paths.insert(e.paths.end(), b.image_paths.begin(), b.image_paths.end());
    e.captions.insert(e.captions.end(), b.captions.begin(), b.captions.end());
    for (int64_t i = 0; i < b.labels.size(0); ++i) e.labels.push_back(b.labels[i].item<int64_t>());
    if (progress) bar.advance(b.images.size(0));
  }
  if (progress) bar.finish();
  TORCH_CHECK(!parts.empty(), "embed_images: the data source gave no usable images");
  e.features = at::cat(parts);
  if (was_training) model->train();
  return e;
}

std::vector<std::pair<int64_t, float>> nearest(const at::Tensor& features, const at::Tensor& query, int64_t k) {
  auto sims = at::matmul(features, query.reshape({-1}));  // [N]
  auto top = sims.topk(std::min<int64_t>(k, sims.size(0)));
  std::vector<std::pair<int64_t, float>> out;
  for (int64_t i = 0; i < std::get<0>(top).size(0); ++i)
    out.emplace_back(std::get<1>(top)[i].item<int64_t>(), std::get<0>(top)[i].item<float>());
  return out;
}

void write_contact_sheet(const std::vector<std::string>& paths, const std::vector<float>& scores, const std::string& title,
                         const std::string& png) {
  const int tile = 112, cols = std::min<int>(8, std::max<int>(1, static_cast<int>(paths.size())));
  const int rows = (static_cast<int>(paths.size()) + cols - 1) / cols;
  cv::Mat sheet(40 + rows * (tile + 22), cols * (tile + 8) + 8, CV_8UC3, cv::Scalar(255, 255, 255));
  cv::putText(sheet, title, {8, 26}, cv::FONT_HERSHEY_SIMPLEX, 0.6, {20, 20, 20}, 1, cv::LINE_AA);
  for (size_t i = 0; i < paths.size(); ++i) {
    const int x = 8 + static_cast<int>(i % cols) * (tile + 8), y = 40 + static_cast<int>(i / cols) * (tile + 22);
    cv::Mat img = cv::imread(paths[i], cv::IMREAD_COLOR);
    if (!img.empty()) {
      cv::resize(img, img, {tile, tile}, 0, 0, img.cols < tile ? cv::INTER_NEAREST : cv::INTER_AREA);
      img.copyTo(sheet(cv::Rect(x, y, tile, tile)));
    }
    cv::putText(sheet, fmt::format("#{} {:.3f}", i + 1, scores[i]), {x, y + tile + 15}, cv::FONT_HERSHEY_SIMPLEX, 0.42,
                {60, 60, 60}, 1, cv::LINE_AA);
  }
  if (!cv::imwrite(png, sheet)) throw std::runtime_error(fmt::format("{}: cannot write the contact sheet", png));
}

}  // namespace torchclip
