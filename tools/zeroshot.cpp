#include "data/loader.h"
#include "eval/evaluate.h"
#include "eval/zeroshot.h"
#include "io/fsutil.h"
#include "report/confusion.h"
#include "subcommands.h"
#include "util/device.h"
#include "util/csv.h"
#include "util/json.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <filesystem>

namespace torchclip::tools {

std::vector<std::string> image_args(Args& args) {
  auto images = args.get_all("images");
  if (!images.empty()) images.insert(images.end(), args.positional().begin(), args.positional().end());
  else if (!args.positional().empty())
    throw UsageError(fmt::format("unexpected argument '{}'", args.positional().front()));
  return images;
}

std::shared_ptr<data::SampleSource> image_source(const std::vector<std::string>& images, const std::string& spec,
                                                 data::CsvOptions csv, const std::vector<std::string>& classes) {
  if (!images.empty()) return data::image_files_source(images);
  if (std::filesystem::is_directory(spec)) return data::image_folder_source(spec, classes);
  if (csv.label_key().empty()) csv.label_key("label");
  csv.num_classes(static_cast<int64_t>(classes.size()));
  return data::open_source(spec, csv);
}

int zeroshot_main(const Argv& argv) {
  Args args(argv);
  const std::string model_dir = args.require("model");
  const std::string classes_arg = args.get("classes", ""), templates_file = args.get("templates", "");
  const std::string classifier_file = args.get("classifier", ""), save_file = args.get("save-classifier", "");
  const std::string spec = args.get("data", ""), confusion = args.get("confusion", "");
  const ResizeMode resize = parse_enum<ResizeMode>(args.get("resize", "pil"), "--resize");
  const int64_t top_k = args.get_int("top-k", 5, 1, 1000000), workers = args.get_int("workers", 2, 1, 256);
  const int64_t max_rows = args.get_int("max-rows", 50, 0, 1000000000);
  const bool json = args.flag("json"), csv_out = args.flag("csv");
  auto csv = csv_flags(args);
  const auto images = image_args(args);
  const c10::Device device = resolve_device(args.get("device", "auto"), "--device");
  args.finish();
  if (classes_arg.empty() == classifier_file.empty() && !(classes_arg.empty() && std::filesystem::is_directory(spec)))
    throw UsageError("give --classes FILE|a,b,c or --classifier FILE (or --data with an ImageFolder tree)");
  if (!images.empty() && !spec.empty()) throw UsageError("give --images or --data, not both");
  if (!save_file.empty()) check_output_path(save_file, "--save-classifier");
  if (!confusion.empty()) check_output_path(confusion + ".csv", "--confusion");

  auto m = load_model_dir(model_dir, device);
  ZeroShotClassifier clf;
  if (!classifier_file.empty()) {
    clf = ZeroShotClassifier::load(classifier_file, m.fingerprint);
  } else {
    std::vector<std::string> classes;
    if (!classes_arg.empty()) {
      classes = parse_class_list(classes_arg);
    } else {  // an ImageFolder tree names its classes
      for (auto c : data::image_folder_classes(spec)) {
        std::replace(c.begin(), c.end(), '_', ' ');
        classes.push_back(c);
      }
    }
    clf = ZeroShotClassifier::build(m, classes, templates_file.empty() ? openai_imagenet_templates() : read_lines(templates_file));
  }
  if (!save_file.empty()) {
    clf.save(save_file);
    if (!json && !csv_out)
      fmt::print(stderr, "classifier ({} classes x {} templates) saved to {}\n", clf.classes.size(), clf.templates.size(), save_file);
  }
  if (images.empty() && spec.empty()) {
    if (save_file.empty()) throw UsageError("give --images PATH... or --data SOURCE to classify");
    return 0;
  }
  const auto& classes = clf.classes;
  data::Loader loader(image_source(images, spec, csv, classes), m.tokenizer,
                      inference_loader_options(m.config, 256, workers, resize));
  auto e = embed_images(m.model, loader, !json && !csv_out);
  auto probs = (100.0 * at::matmul(e.features, clf.weights)).softmax(-1);  // [N, C]
  const int64_t K = std::min<int64_t>(top_k, static_cast<int64_t>(classes.size()));
  auto top = probs.topk(K, 1);
  auto top_p = std::get<0>(top).contiguous(), top_i = std::get<1>(top).contiguous();
  const float* tp = top_p.data_ptr<float>();
  const int64_t* ti = top_i.data_ptr<int64_t>();
  auto report = zero_shot_report(probs, e.labels, e.origins);
  const int64_t N = probs.size(0);
  auto name_of = [&](int64_t i) { return e.paths[i].empty() ? e.origins[i] : e.paths[i]; };

  if (!confusion.empty() && report.labelled) {
    write_confusion_csv(report, classes, confusion + ".csv");
    write_confusion_png(report, classes, confusion + ".png");
  }
  if (csv_out) {
    std::string header = "path,label";
    for (int64_t k = 1; k <= K; ++k) header += fmt::format(",class_{},prob_{}", k, k);
    fmt::print("{}\n", header);
    const auto& field = csv_field;
    for (int64_t i = 0; i < N; ++i) {
      std::string row = field(name_of(i)) + "," + (e.labels[i] >= 0 ? field(classes[e.labels[i]]) : "");
      for (int64_t k = 0; k < K; ++k) row += fmt::format(",{},{:.6f}", field(classes[ti[i * K + k]]), tp[i * K + k]);
      fmt::print("{}\n", row);
    }
    return 0;
  }
  if (json) {
    std::vector<std::string> preds, per_class, conf_rows;
    for (int64_t i = 0; i < N; ++i) {
      std::vector<std::string> tops;
      for (int64_t k = 0; k < K; ++k)
        tops.push_back(fmt::format("{{\"class\": {}, \"prob\": {}}}", json_quote(classes[ti[i * K + k]]), json_float(tp[i * K + k])));
      preds.push_back(fmt::format("{{\"path\": {}, \"label\": {}, \"top\": [{}]}}", json_quote(name_of(i)),
                                  e.labels[i] >= 0 ? json_quote(classes[e.labels[i]]) : "null", fmt::join(tops, ", ")));
    }
    std::string summary;
    if (report.labelled) {
      for (size_t c = 0; c < classes.size(); ++c)
        per_class.push_back(fmt::format("{}: {}", json_quote(classes[c]),
                                        json_float(report.per_class[c])));
      for (size_t c = 0; c < classes.size(); ++c) {
        std::vector<int64_t> row(classes.size());
        for (size_t j = 0; j < classes.size(); ++j) row[j] = report.confusion[c][j].item<int64_t>();
        conf_rows.push_back(fmt::format("[{}]", fmt::join(row, ", ")));
      }
      summary = fmt::format("\"top1\": {}, \"top5\": {}, \"labelled\": {}, \"per_class\": {{{}}}, \"confusion\": [{}], ",
                            json_float(report.top1), json_float(report.top5), report.labelled, fmt::join(per_class, ", "), fmt::join(conf_rows, ", "));
    }
    std::vector<std::string> qc;
    for (const auto& c : classes) qc.push_back(json_quote(c));
    fmt::print("{{\"model\": {}, \"classes\": [{}], \"templates\": {}, \"n\": {}, \"skipped\": {}, {}\"predictions\": [{}]}}\n",
               json_quote(model_dir), fmt::join(qc, ", "), clf.templates.size(), N, loader.stats().skipped, summary,
               fmt::join(preds, ",\n  "));
    return 0;
  }
  // A table on the terminal.
  for (int64_t i = 0; i < std::min(N, max_rows); ++i) {
    std::string row;
    for (int64_t k = 0; k < K; ++k) row += fmt::format("  {} {:5.1f}%", classes[ti[i * K + k]], 100 * tp[i * K + k]);
    fmt::print("{}{}\n   {}\n", name_of(i), e.labels[i] >= 0 ? " [" + classes[e.labels[i]] + "]" : "", row);
  }
  if (N > max_rows) fmt::print("... {} more images (--max-rows N, or --csv / --json for all)\n", N - max_rows);
  if (loader.stats().skipped) fmt::print("skipped {} unusable images\n", loader.stats().skipped);
  if (report.labelled) {
    fmt::print("\nzero-shot on {} labelled images, {} classes x {} templates: top-1 {:.2f}%  top-5 {:.2f}%\n", report.labelled,
               classes.size(), clf.templates.size(), 100 * report.top1, 100 * report.top5);
    for (size_t c = 0; c < classes.size(); ++c)
      fmt::print("  {:<28} {:>6}  {}\n", classes[c], report.per_class_count[c],
                 std::isnan(report.per_class[c]) ? std::string("-") : fmt::format("{:.2f}%", 100 * report.per_class[c]));
    if (!confusion.empty()) fmt::print("confusion matrix: {}.csv, {}.png\n", confusion, confusion);
  }
  return 0;
}

}  // namespace torchclip::tools
