#include "eval/evaluate.h"

#include "eval/retrieval.h"
#include "eval/zeroshot.h"
#include "util/autocast.h"
#include "util/progress.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

namespace torchclip {

data::LoaderOptions inference_loader_options(const ModelConfig& cfg, int64_t batch_size, int64_t workers,
                                             ResizeMode resize) {
  return data::LoaderOptions()
      .batch_size(batch_size)
      .workers(workers)
      .shuffle(false)
      .drop_last(false)
      .context_length(cfg.text_cfg().context_length())
      .transform(data::ImageTransformOptions()
                     .image_size(cfg.vision_cfg().image_size())
                     .resize(resize));
}

std::string no_usable_images(const data::Loader& loader) {
  const auto& st = loader.stats();
  std::vector<std::string> reasons;
  for (const auto& [reason, n] : st.skipped_by_reason) reasons.push_back(fmt::format("{} {}", n, reason));
  return fmt::format("{}: no usable images ({} samples skipped{}); check it with `torchclip data check`",
                     loader.source().describe(), st.skipped, reasons.empty() ? "" : fmt::format(": {}", fmt::join(reasons, ", ")));
}

EvalResult evaluate(CLIP& model, const Tokenizer& tokenizer, data::Loader& loader, const std::vector<std::string>& classes,
                    const std::vector<std::string>& templates, bool bf16, bool progress) {
  const bool was_training = model->is_training();
  model->eval();
  torch::NoGradGuard no_grad;
  EvalResult r;
  const c10::Device device = model->device();
  at::Tensor classifier;  // [E, C] on `device`
  const int64_t ctx = model->config.text_cfg().context_length();
  if (!classes.empty()) classifier = zero_shot_classifier(model, tokenizer, classes, templates, ctx);
  std::vector<at::Tensor> image_features, text_features, logits;
  std::vector<int64_t> labels;
  std::vector<std::string> origins;  // where each labelled row came from, for messages
  loader.start_epoch(0);
  Progress bar("eval", 0, "img");
  for (data::Batch b; loader.next(b);) {
    at::Tensor img, txt;
    {
      AutocastGuard autocast(device.type(), bf16);
      img = model->encode_image(b.images.to(device, /*non_blocking=*/true), true).to(at::kFloat);  // [B, E]
      txt = model->encode_text(b.texts.to(device, /*non_blocking=*/true), true).to(at::kFloat);    // [B, E]
    }
    image_features.push_back(img);
    text_features.push_back(txt);
    if (classifier.defined()) {
      logits.push_back(100.0 * at::matmul(img, classifier));  // [B, C]
      auto l = b.labels.contiguous();
      labels.insert(labels.end(), l.data_ptr<int64_t>(), l.data_ptr<int64_t>() + l.numel());
      origins.insert(origins.end(), b.origins.begin(), b.origins.end());
    }
    if (progress) bar.advance(b.images.size(0));
  }
  if (progress) bar.finish();
  if (image_features.empty()) throw std::runtime_error(no_usable_images(loader));
  if (!logits.empty()) {
    // The same top-1/top-5 and confusion matrix as `torchclip zeroshot` (unlabelled rows skipped).
    const ZeroShotReport z = zero_shot_report(at::cat(logits).cpu(), labels, origins);
    r.confusion = z.confusion;
    if (z.labelled) {
      r.metrics["zeroshot_top1"] = z.top1;
      r.metrics["zeroshot_top5"] = z.top5;
    }
  }
  if (!image_features.empty()) {
    auto all_images = at::cat(image_features);  // [N, E]
    auto ret = retrieval_metrics(all_images, at::cat(text_features));
    r.metrics.insert(ret.begin(), ret.end());
    r.metrics["n"] = static_cast<double>(all_images.size(0));
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
    parts.push_back(model->encode_image(b.images.to(model->device(), /*non_blocking=*/true), true).cpu());  // [B, E]
    e.origins.insert(e.origins.end(), b.origins.begin(), b.origins.end());
    e.paths.insert(e.paths.end(), b.image_paths.begin(), b.image_paths.end());
    e.captions.insert(e.captions.end(), b.captions.begin(), b.captions.end());
    auto labels = b.labels.contiguous();  // [B], on the host
    e.labels.insert(e.labels.end(), labels.data_ptr<int64_t>(), labels.data_ptr<int64_t>() + labels.numel());
    if (progress) bar.advance(b.images.size(0));
  }
  if (progress) bar.finish();
  if (parts.empty()) throw std::runtime_error(no_usable_images(loader));
  e.features = at::cat(parts);
  if (was_training) model->train();
  return e;
}

}  // namespace torchclip
