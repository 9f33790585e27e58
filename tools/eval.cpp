#include "data/loader.h"
#include "eval/evaluate.h"
#include "io/fsutil.h"
#include "model/model_dir.h"
#include "report/contact_sheet.h"
#include "search/index.h"
#include "subcommands.h"
#include "util/args.h"
#include "util/device.h"
#include "util/json.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace torchclip::tools {

int eval_main(const Argv& argv) {
  Args args(argv);
  const std::string model_dir = args.require("model"), spec = args.require("data");
  auto csv = csv_flags(args);
  if (csv.label_key().empty()) csv.label_key("label");
  const std::string classes_file = args.get("classes", ""), templates_file = args.get("templates", "");
  const int64_t workers = args.get_int("workers", 2, 1, 256), k = args.get_int("k", 8, 1, 1000000);
  const auto queries = args.get_all("query");
  const std::string grid = args.get("grid", "");
  const bool json = args.flag("json");
  const ResizeMode resize = parse_enum<ResizeMode>(args.get("resize", "pil"), "--resize");
  const c10::Device device = resolve_device(args.get("device", "auto"), "--device");
  args.finish();
  auto m = load_model_dir(model_dir, device);
  std::vector<std::string> classes, templates;
  if (!classes_file.empty()) {
    classes = read_lines(classes_file);
    if (templates_file.empty()) throw UsageError("--classes needs --templates (one prompt per line, {} for the class)");
    templates = read_lines(templates_file);
    csv.num_classes(static_cast<int64_t>(classes.size()));
  }
  data::Loader loader(data::open_source(spec, csv), m.tokenizer, inference_loader_options(m.config, 512, workers, resize));
  if (!queries.empty()) {  // text -> image retrieval over the data's images
    auto index = embed_images(m.model, loader, !json);
    const auto hits_per_query = search_index(index.features, embed_texts(m, queries), k);
    std::string results;
    for (size_t qi = 0; qi < queries.size(); ++qi) {
      const auto& hits = hits_per_query[qi];
      std::vector<std::string> paths, rows;
      std::vector<float> scores;
      if (!json) fmt::print("query \"{}\":\n", queries[qi]);
      for (const auto& [row, score] : hits) {  // best first
        paths.push_back(index.paths[row]);
        scores.push_back(score);
        if (!json) fmt::print("  {:.4f}  {}  ({})\n", score, index.paths[row].empty() ? index.origins[row] : index.paths[row],
                              index.captions[row]);
        rows.push_back(fmt::format("{{\"score\": {}, \"path\": {}, \"origin\": {}, \"label\": {}}}", json_float(score),
                                   json_quote(index.paths[row]), json_quote(index.origins[row]), index.labels[row]));
      }
      results += fmt::format("{}{{\"query\": {}, \"results\": [{}]}}", qi ? ", " : "", json_quote(queries[qi]),
                             fmt::join(rows, ", "));
      if (!grid.empty()) {
        const std::string png = queries.size() == 1 ? grid : fmt::format("{}.{}.png", grid, qi);
        write_contact_sheet(paths, scores, "query: " + queries[qi], png);
        if (!json) fmt::print("  contact sheet: {}\n", png);
      }
    }
    if (json) fmt::print("[{}]\n", results);
    return 0;
  }
  auto r = evaluate(m.model, *m.tokenizer, loader, classes, templates, false, !json);
  std::string body;
  for (const auto& [k, v] : r.metrics) body += fmt::format("{}{}: {}", body.empty() ? "" : ", ", json_quote(k), json_float(v, "%.6g"));
  if (json) {
    fmt::print("{{{}}}\n", body);
  } else {
    for (const auto& [k, v] : r.metrics) fmt::print("{:<28} {:.4f}\n", k, v);
  }
  return 0;
}

}  // namespace torchclip::tools
