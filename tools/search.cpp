// torchclip embed, index and search.
#include "data/loader.h"
#include "eval/evaluate.h"
#include "io/fsutil.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "report/contact_sheet.h"
#include "report/gallery.h"
#include "search/index.h"
#include "subcommands.h"
#include "util/device.h"
#include "util/json.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <iostream>

namespace torchclip::tools {

int embed_main(const Argv& argv) {
  Args args(argv);
  const std::string model_dir = args.require("model"), out = args.require("out");
  const std::string spec = args.get("data", ""), texts_file = args.get("texts", ""), resize_flag = args.get("resize", "pil");
  const std::string dtype = args.get("dtype", "fp32");
  const int64_t workers = args.get_int("workers", 2, 1, 256), batch = args.get_int("batch", 64, 1, 65536);
  auto csv = csv_flags(args);
  const auto images = image_args(args);
  const c10::Device device = resolve_device(args.get("device", "auto"), "--device");
  args.finish();
  if (static_cast<int>(!images.empty()) + static_cast<int>(!spec.empty()) + static_cast<int>(!texts_file.empty()) != 1)
    throw UsageError("give exactly one of --images PATH..., --data SOURCE, --texts FILE (- for stdin)");
  const bool npy = out.size() > 4 && out.compare(out.size() - 4, 4, ".npy") == 0;
  const bool st = out.size() > 12 && out.compare(out.size() - 12, 12, ".safetensors") == 0;
  if (!npy && !st) throw UsageError(fmt::format("--out '{}': the extension must be .npy or .safetensors", out));
  if (dtype != "fp32" && dtype != "fp16") throw UsageError("--dtype must be fp32 or fp16");
  check_output_path(out, "--out");

  auto m = load_model_dir(model_dir, device);
  at::Tensor features;
  std::vector<std::string> inputs;
  std::string kind;
  int64_t skipped = 0;
  if (!texts_file.empty()) {
    kind = "text";
    if (texts_file == "-") {
      for (std::string line; std::getline(std::cin, line);)
        if (!line.empty()) inputs.push_back(line);
    } else {
      inputs = read_lines(texts_file);
    }
    if (inputs.empty()) throw std::runtime_error(fmt::format("{}: no texts (one per line)", texts_file));
    std::vector<at::Tensor> parts;
    for (size_t b = 0; b < inputs.size(); b += static_cast<size_t>(batch))
      parts.push_back(embed_texts(m, std::vector<std::string>(inputs.begin() + b, inputs.begin() + std::min(inputs.size(), b + batch))));
    features = at::cat(parts);
  } else {
    kind = "image";
    data::Loader loader(image_source(images, spec, csv, {}), m.tokenizer, inference_loader_options(m.config, batch, workers, parse_enum<ResizeMode>(resize_flag, "--resize")));
    auto e = embed_images(m.model, loader);
    features = e.features;
    for (size_t i = 0; i < e.origins.size(); ++i) inputs.push_back(e.paths[i].empty() ? e.origins[i] : e.paths[i]);
    skipped = loader.stats().skipped;
  }
  features = features.to(dtype == "fp16" ? at::kHalf : at::kFloat);
  if (npy) save_npy(out, features);
  else save_safetensors(out, {{"embeddings", features}}, {{"model_fingerprint", m.fingerprint}, {"kind", kind}});
  std::vector<std::string> q;
  for (const auto& s : inputs) q.push_back(json_quote(s));
  write_file_atomic(out + ".json",
                    fmt::format("{{\"model\": {}, \"model_fingerprint\": {}, \"kind\": \"{}\", \"dtype\": \"{}\", \"count\": {}, "
                                "\"dim\": {}, \"skipped\": {}, \"inputs\": [\n  {}\n]}}\n",
                                json_quote(model_dir), json_quote(m.fingerprint), kind, dtype, features.size(0),
                                features.size(1), skipped, fmt::join(q, ",\n  ")));
  fmt::print(stderr, "{} {} embeddings [{}, {}] -> {} (inputs in order: {}.json){}\n", features.size(0), kind, features.size(0),
             features.size(1), out, out, skipped ? fmt::format("; {} unusable images skipped", skipped) : "");
  return 0;
}

int index_main(const Argv& argv) {
  Args args(argv);
  const std::string model_dir = args.get("model", ""), out = args.require("out");
  const std::string spec = args.get("data", "");
  IndexOptions o;
  o.ann(AnnOptions()
            .type(args.get("type", "auto"))
            .nlist(args.get_int("nlist", 0, 0, 1 << 24))
            .pq_m(args.get_int("pq-m", 0, 0, 4096))
            .hnsw_m(args.get_int("hnsw-m", 32, 4, 256))
            .train_rows(args.get_int("train-rows", 0, 0, int64_t{1} << 40)));
  o.retrain(args.flag("retrain"));
  o.trained(args.get("trained", ""));
  const auto merge = args.get_all("merge");
  o.dtype(args.get("dtype", o.dtype()))
      .workers(args.get_int("workers", o.workers(), 1, 256))
      .batch_size(args.get_int("batch", o.batch_size(), 1, 65536))
      .resize(parse_enum<ResizeMode>(args.get("resize", enum_name(o.resize())), "--resize"))
      .measure_model(args.flag("measure-model"));
  const bool json = args.flag("json");
  o.progress(!json);
  auto csv = csv_flags(args);
  const auto images = image_args(args);
  const c10::Device device = resolve_device(args.get("device", "auto"), "--device");
  args.finish();
  if (!merge.empty()) {  // shards built apart with one FAISS training, merged into OUT
    if (!images.empty() || !spec.empty()) throw UsageError("--merge takes indexes, not --images or --data");
    check_output_path(out, "--out");
    const auto r = merge_indexes(merge, out);
    if (json) fmt::print("{}\n", r.to_json());
    else
      fmt::print("index {}: {} images merged from {} shards; FAISS {} with on-disk lists ({:.1f} MB) in {:.1f} s\n", out, r.total,
                 merge.size(), r.ann_type, r.ann_bytes / 1e6, r.seconds);
    return 0;
  }
  if (model_dir.empty()) throw UsageError("--model is required (except with --merge)");
  if (images.empty() == spec.empty()) throw UsageError("give --images PATH... or --data SOURCE");
  if (o.dtype() != "fp16" && o.dtype() != "fp32" && o.dtype() != "int8")
    throw UsageError("--dtype '" + o.dtype() + "': valid: fp16, fp32, int8");
  const auto& types = {"auto", "exact", "flat", "ivf-flat", "ivf-pq", "hnsw"};
  if (std::find(types.begin(), types.end(), o.ann().type()) == types.end())
    throw UsageError(fmt::format("--type '{}': valid: {}", o.ann().type(), fmt::join(types, ", ")));
  check_output_path(out, "--out");
  auto m = load_model_dir(model_dir, device);
  auto r = build_index(m, images, spec, csv, out, o);
  if (json) {
    fmt::print("{}\n", r.to_json());
    return 0;
  }
  fmt::print("index {}: {} images ({} embedded at {:.1f} images/s, {} kept, {} pruned) in {:.1f} s\n", out, r.total, r.embedded,
             r.embed_images_per_second, r.kept, r.pruned, r.seconds);
  if (r.ann_type != "exact")
    fmt::print("FAISS {} index {} ({:.1f} MB) {} in {:.1f} s\n", r.ann_type, ann_path(out), r.ann_bytes / 1e6,
               r.ann_retrained ? "trained and filled" : "refilled with the same training", r.ann_seconds);
  if (r.embedded)
    fmt::print("waited for data {:.2f} s ({:.1f}% of embedding time){}\n", r.data_wait_seconds, 100 * r.data_wait_share,
               r.model_images_per_second > 0
                   ? fmt::format("; model alone {:.1f} images/s, so the build ran at {:.0f}% of it", r.model_images_per_second,
                                 100 * r.embed_images_per_second / r.model_images_per_second)
                   : "");
  if (!r.skipped.empty()) {
    fmt::print("skipped {} unusable files:\n", r.skipped.size());
    for (const auto& s : r.skipped) fmt::print("  {}\n", s);
  }
  return 0;
}

int search_main(const Argv& argv) {
  Args args(argv);
  const std::string index_path = args.require("index"), model_dir = args.require("model");
  auto queries = args.get_all("query");
  const std::string image = args.get("image", ""), gallery = args.get("gallery", ""), grid = args.get("grid", "");
  const int64_t k = args.get_int("k", 10, 1, 1000000);
  // int8 indexes: rows per query reranked exactly after the int8 scan; --exact scans the fp16 rows.
  const int64_t candidates = args.get_int("candidates", 0, 0, 1000000);  // 0: int8 100, FAISS ivf-pq 400
  const bool exact = args.flag("exact");
  const auto ann = AnnSearchOptions().nprobe(args.get_int("nprobe", 0, 0, 1 << 24)).ef_search(args.get_int("ef-search", 0, 0, 1 << 20));
  const bool json = args.flag("json");
  const c10::Device device = resolve_device(args.get("device", "auto"), "--device");
  args.finish();
  if (!queries.empty() && !image.empty()) throw UsageError("give --query TEXT or --image PATH, not both");
  for (const auto& [path, flag] : {std::pair{gallery, "--gallery"}, std::pair{grid, "--grid"}})
    if (!path.empty()) check_output_path(path, flag);
  if (!image.empty())
    if (const std::string problem = file_problem(image); !problem.empty())
      throw UsageError(fmt::format("--image '{}': {}", image, problem));
  const auto t0 = std::chrono::steady_clock::now();
  if (queries.empty() && image.empty()) {  // one query per line from stdin, all read before the index is opened
    for (std::string line; std::getline(std::cin, line);)
      if (!line.empty()) queries.push_back(line);
    if (queries.empty()) throw UsageError("no query: give --query TEXT, --image PATH, or queries on stdin");
  }
  auto index = ImageIndex::open(index_path, /*load_ann=*/!exact);  // --exact needs no FAISS index
  auto m = load_model_dir(model_dir, device);
  check_index_model(index, index_path, m);
  const ResizeMode resize = index_resize_mode(index, index_path);  // how the index's images were resized, for an image query
  at::Tensor q = image.empty() ? embed_texts(m, queries) : embed_image_file(m, image, resize);
  if (!image.empty()) queries = {"image: " + image};
  const auto t1 = std::chrono::steady_clock::now();
  index.check_intact();  // the rows scanned are the rows whose paths were read at open
  auto hits = index.search(q, k, candidates, exact, ann);
  index.check_intact();
  const double search_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count();
  std::vector<std::vector<std::string>> paths(queries.size());
  std::vector<std::vector<float>> scores(queries.size());
  std::vector<std::string> results;
  for (size_t qi = 0; qi < queries.size(); ++qi) {
    std::vector<std::string> rows;
    if (!json) fmt::print("{}\n", queries[qi]);
    for (size_t r = 0; r < hits[qi].size(); ++r) {
      const auto& h = hits[qi][r];
      paths[qi].push_back(index.paths[h.row]);
      scores[qi].push_back(h.score);
      if (!json) fmt::print("  {:>3}  {:.4f}  {}\n", r + 1, h.score, index.paths[h.row]);
      rows.push_back(fmt::format("{{\"rank\": {}, \"score\": {}, \"path\": {}}}", r + 1, json_float(h.score), json_quote(index.paths[h.row])));
    }
    results.push_back(fmt::format("{{\"query\": {}, \"results\": [{}]}}", json_quote(queries[qi]), fmt::join(rows, ", ")));
    if (!grid.empty()) {
      const std::string png = queries.size() == 1 ? grid : fmt::format("{}.{}.png", grid, qi);
      write_contact_sheet(paths[qi], scores[qi], queries[qi], png);
      if (!json) fmt::print("  contact sheet: {}\n", png);
    }
  }
  if (!gallery.empty()) write_gallery(queries, paths, scores, gallery);
  const double total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (json) {
    fmt::print("{{\"index\": {}, \"images\": {}, \"method\": \"{}\", \"search_ms\": {:.3f}, \"queries\": [{}]}}\n",
               json_quote(index_path), index.size(), exact ? "exact" : index.method(), search_ms, fmt::join(results, ",\n  "));
  } else {
    fmt::print(stderr, "searched {} images for {} queries in {:.1f} ms ({:.0f} ms including model load){}\n", index.size(),
               queries.size(), search_ms, total_ms, gallery.empty() ? "" : "; gallery: " + gallery);
  }
  return 0;
}

}  // namespace torchclip::tools
