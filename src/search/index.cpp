#include "search/index.h"

#if TORCHCLIP_HAVE_OPENCV
#include "data/image.h"
#endif
#include "data/loader.h"
#include "data/transform.h"
#include "io/fsutil.h"
#include "io/safetensors.h"
#include "eval/evaluate.h"
#include "util/cpu_allocator.h"
#include "util/json.h"
#include "util/progress.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <functional>
#include <mutex>
#include <numeric>
#include <set>
#include <unordered_map>

namespace torchclip {
namespace fs = std::filesystem;

namespace {

constexpr const char* kIndexFormat = "torchclip-index";

std::string now_iso8601() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

const std::string& ImageIndex::model_fingerprint() const {
  static const std::string none;
  auto it = info.find("model_fingerprint");
  return it == info.end() ? none : it->second;
}

ImageIndex ImageIndex::open(const std::string& path, bool load_ann) {
  auto f = map_safetensors(path);
  auto fmt_it = f.metadata.find("format");
  if (fmt_it == f.metadata.end() || fmt_it->second != kIndexFormat)
    throw std::runtime_error(fmt::format("{}: not a torchclip index (no format={} metadata); build one with torchclip index",
                                         path, kIndexFormat));
  for (const char* t : {"embeddings", "paths", "path_offsets", "stats"})
    if (!f.tensors.count(t)) throw std::runtime_error(fmt::format("{}: index has no '{}' tensor", path, t));
  ImageIndex x;
  x.embeddings = f.tensors["embeddings"];
  if (f.tensors.count("codes") != f.tensors.count("scales"))
    throw std::runtime_error(fmt::format("{}: an int8 index needs both 'codes' and 'scales'", path));
  if (f.tensors.count("codes")) {
    x.int8 = {f.tensors["codes"], f.tensors["scales"]};
    const auto& c = x.int8.codes;
    const auto& sc = x.int8.scales;
    if (c.scalar_type() != at::kChar || c.sizes() != x.embeddings.sizes() || sc.scalar_type() != at::kFloat || sc.dim() != 1 ||
        sc.size(0) != c.size(0))
      throw std::runtime_error(fmt::format("{}: inconsistent int8 index (embeddings {}, codes {} {}, scales {} {})", path,
                                           x.embeddings.sizes(), c.sizes(), c10::toString(c.scalar_type()), sc.sizes(),
                                           c10::toString(sc.scalar_type())));
  }
  x.stats = f.tensors["stats"];
  x.info = f.metadata;
  x.mapping = f.mapping;
  const auto& offsets = f.tensors["path_offsets"];
  const auto& bytes = f.tensors["paths"];
  const int64_t N = x.embeddings.dim() == 2 ? x.embeddings.size(0) : -1;
  if (N < 0 || offsets.dim() != 1 || offsets.size(0) != N + 1 || x.stats.sizes() != at::IntArrayRef({N, 2}) ||
      bytes.scalar_type() != at::kByte || offsets.scalar_type() != at::kLong ||
      (x.embeddings.scalar_type() != at::kHalf && x.embeddings.scalar_type() != at::kFloat))
    throw std::runtime_error(fmt::format("{}: inconsistent index (embeddings {}, path_offsets {}, stats {})", path,
                                         x.embeddings.sizes(), offsets.sizes(), x.stats.sizes()));
  const int64_t* off = offsets.data_ptr<int64_t>();
  const char* chars = reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>());
  x.paths.reserve(N);
  for (int64_t i = 0; i < N; ++i) {
    if (off[i] < 0 || off[i] > off[i + 1] || off[i + 1] > bytes.numel())
      throw std::runtime_error(fmt::format("{}: path_offsets[{}] out of range", path, i));
    x.paths.emplace_back(chars + off[i], off[i + 1] - off[i]);
  }
  if (load_ann) x.load_ann(path);
  return x;
}

void ImageIndex::load_ann(const std::string& path) {
  const auto t = info.find("ann_type");
  if (t == info.end() || t->second == "exact") return;
  const auto id = info.find("ann_build_id");
  ann = std::make_shared<const AnnIndex>(AnnIndex::load(ann_path(path), model_fingerprint(), size(), id == info.end() ? "(none)" : id->second));
}

std::string ImageIndex::method() const {
  if (ann) return "faiss:" + ann->type();
  return int8.codes.defined() ? "int8+rerank" : "exact";
}

void ImageIndex::save(const std::string& path) const {
  std::vector<int64_t> offsets{0};
  std::string bytes;
  for (const auto& p : paths) {
    bytes += p;
    offsets.push_back(static_cast<int64_t>(bytes.size()));
  }
  auto chars = at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
  std::copy(bytes.begin(), bytes.end(), reinterpret_cast<char*>(chars.data_ptr<uint8_t>()));
  auto meta = info;
  meta["format"] = kIndexFormat;
  meta["version"] = "1";
  meta["count"] = std::to_string(size());
  std::map<std::string, at::Tensor> tensors{{"embeddings", embeddings.contiguous()},
                                            {"paths", chars},
                                            {"path_offsets", at::tensor(offsets, at::kLong)},
                                            {"stats", stats.contiguous()}};
  if (int8.codes.defined()) {
    tensors["codes"] = int8.codes.contiguous();
    tensors["scales"] = int8.scales.contiguous();
  }
  save_safetensors(path, tensors, meta);
}

std::vector<std::vector<SearchHit>> ImageIndex::search(const at::Tensor& queries, int64_t k, int64_t candidates,
                                                       bool exact, AnnSearchOptions ann_options) const {
  try {
    if (ann && !exact) return ann->search(queries, k, candidates > 0 ? ann_options.candidates(candidates) : ann_options, embeddings);
    if (int8.codes.defined() && !exact) return search_int8(int8, embeddings, queries, k, candidates > 0 ? candidates : 100);
    return search_index(embeddings, queries, k);
  } catch (const MappedRowsVanished&) {
    check_intact();  // names the file and its sizes
    throw;
  }
}

std::string IndexReport::to_json() const {
  std::vector<std::string> q;
  for (const auto& s : skipped) q.push_back(json_quote(s));
  return fmt::format("{{\"total\": {}, \"embedded\": {}, \"kept\": {}, \"pruned\": {}, \"skipped\": [{}], \"seconds\": {:.3f}, "
                     "\"embed_images_per_second\": {:.2f}, \"data_wait_seconds\": {:.3f}, \"data_wait_share\": {:.4f}, "
                     "\"model_images_per_second\": {:.2f}, \"ann\": {{\"type\": \"{}\", \"retrained\": {}, \"seconds\": {:.3f}, "
                     "\"bytes\": {}}}}}",
                     total, embedded, kept, pruned, fmt::join(q, ", "), seconds, embed_images_per_second, data_wait_seconds,
                     data_wait_share, model_images_per_second, ann_type, ann_retrained ? "true" : "false", ann_seconds, ann_bytes);
}

IndexReport build_index(LoadedModel& m, const std::vector<std::string>& images, const std::string& data,
                        const data::CsvOptions& csv, const std::string& out, const IndexOptions& o) {
  TORCH_CHECK(o.dtype() == "fp16" || o.dtype() == "fp32" || o.dtype() == "int8",
              "index: --dtype must be fp16, fp32 or int8, got '", o.dtype(), "'");
  TORCH_CHECK(images.empty() != data.empty(), "index: give image files/folders or a data source, not both");
  const auto t0 = std::chrono::steady_clock::now();
  const bool shards = data.find(".tar") != std::string::npos;
  // What should be in the index: file paths (stat-checked), or a whole tar source.
  std::vector<std::string> files, pre_skipped;
  std::shared_ptr<data::SampleSource> source;
  if (!images.empty()) {
    files = data::expand_image_paths(images);
  } else if (shards) {
    source = data::open_source(data, csv);
  } else {
    auto src = data::open_source(data, csv);
    data::StreamSpec spec;
    spec.shuffle = false;
    auto stream = src->open(spec);
    std::set<std::string> seen;
    for (data::RawSample s; stream->next(s);) {
      // Only rows naming an image file: a bad row, or one naming a folder, is reported, not
      // expanded (its images would be indexed twice, and pruned and re-added on every update).
      // (A bad caption or label does not matter to an index; a row without a usable path does.)
      const bool bad_row = s.error_reason == "csv_malformed" || s.error_reason == "csv_too_few_columns" ||
                           s.error_reason == "csv_empty_path";
      if (bad_row) {
        pre_skipped.push_back(fmt::format("{}: {}", s.origin, s.error_reason));
      } else if (s.image_path.empty()) {
        continue;  // not a file (a tensor file's or synthetic sample): nothing to index by path
      } else if (const std::string problem = file_problem(s.image_path); !problem.empty()) {
        pre_skipped.push_back(fmt::format("{}: {} {}", s.origin, s.image_path, problem));
      } else if (seen.insert(s.image_path).second) {
        files.push_back(s.image_path);
      }
    }
  }
  IndexReport r;
  r.skipped = std::move(pre_skipped);
  // The existing index, if any: rows whose file is unchanged are kept.
  ImageIndex old;
  std::unordered_map<std::string, int64_t> old_rows;
  std::error_code ec;
  if (fs::exists(out, ec)) {
    old = ImageIndex::open(out, /*load_ann=*/false);
    if (old.model_fingerprint() != m.fingerprint)
      throw std::runtime_error(fmt::format("{}: built by another model (fingerprint {}, this model {}); remove it or "
                                           "choose another --out to build a new index",
                                           out, old.model_fingerprint(), m.fingerprint));
    try {  // its FAISS index, to refill; a missing or stale one is retrained (and said so)
      old.load_ann(out);
    } catch (const std::exception& e) {
      r.skipped.push_back(fmt::format("{} (the FAISS index is rebuilt and retrained)", e.what()));
    }
    for (int64_t i = 0; i < old.size(); ++i) old_rows.emplace(old.paths[i], i);
  }
  // The FAISS side is checked before any image is embedded: another index's training to reuse
  // (shards), and an update of a merged index (whose lists are on disk: merge its shards again).
  std::string type = o.ann().type();
  std::shared_ptr<const AnnIndex> trained;  // another index's training to reuse (shards)
  if (!o.trained().empty()) {
    auto t = ImageIndex::open(o.trained());
    if (t.model_fingerprint() != m.fingerprint)
      throw std::runtime_error(fmt::format("--trained {}: built by another model (fingerprint {}, this model {})", o.trained(),
                                           t.model_fingerprint(), m.fingerprint));
    if (!t.ann || (t.ann->type() != "ivf-flat" && t.ann->type() != "ivf-pq"))
      throw std::invalid_argument(fmt::format("--trained {}: it has no IVF index to take the training of (its type: {})", o.trained(),
                                              t.ann ? t.ann->type() : "exact"));
    if (type != "auto" && type != t.ann->type())
      throw std::invalid_argument(fmt::format("--type {} differs from --trained {}'s {}", type, o.trained(), t.ann->type()));
    trained = t.ann;
    type = trained->type();
  }
  if (old.info.count("ann_ivfdata") && !trained && !o.retrain() && (type == "auto" || type == old.info["ann_type"]))
    throw std::invalid_argument(fmt::format("{} was merged from shards (its FAISS lists are on disk): update the shards and merge "
                                            "them again with torchclip index --merge, or rebuild it whole with --retrain",
                                            out));
  std::vector<int64_t> keep_rows;
  std::vector<std::string> keep_paths, to_embed;
  std::vector<std::pair<int64_t, int64_t>> to_embed_stats;
  std::unordered_map<std::string, std::pair<int64_t, int64_t>> stat_of;
  const at::Tensor old_stat_rows = old.size() ? old.stats.contiguous() : at::Tensor();  // [N, 2], kept alive
  const int64_t* old_stats = old.size() ? old_stat_rows.data_ptr<int64_t>() : nullptr;
  for (const auto& f : files) {
    const FileStat fst = stat_path(f);
    const std::pair<int64_t, int64_t> st{fst.size, fst.mtime_ns};
    stat_of[f] = st;
    auto it = old_rows.find(f);
    if (it != old_rows.end() && old_stats[2 * it->second] == st.first && old_stats[2 * it->second + 1] == st.second) {
      keep_rows.push_back(it->second);
      keep_paths.push_back(f);
    } else {
      to_embed.push_back(f);
    }
  }
  r.kept = static_cast<int64_t>(keep_rows.size());
  r.pruned = old.size() - r.kept - static_cast<int64_t>(std::count_if(to_embed.begin(), to_embed.end(),
                                                                      [&](const auto& f) { return old_rows.count(f); }));

  // Embed what is new or changed.
  std::vector<at::Tensor> parts;
  std::vector<std::string> new_paths;
  if (!to_embed.empty() || source) {
    if (!source) source = data::image_files_source(to_embed);
    const int64_t todo = source->size() > 0 ? source->size() : 0;
    data::Loader loader(source, m.tokenizer,
                        inference_loader_options(m.config, o.batch_size(), o.workers(), o.resize())
                            .log_first_failures(0)
                            .max_consecutive_failures(std::numeric_limits<int64_t>::max()));
    torch::NoGradGuard no_grad;
    m.model->eval();
    Progress bar("index", todo, "img");
    const auto e0 = std::chrono::steady_clock::now();
    loader.start_epoch(0);
    at::Tensor probe;  // one decoded batch, for measure_model
    for (data::Batch b; loader.next(b);) {
      auto images = b.images.to(m.model->device(), /*non_blocking=*/true);  // [B, 3, S, S]
      if (o.measure_model() && !probe.defined()) probe = images;
      parts.push_back(m.model->encode_image(images, /*normalize=*/true).cpu());
      for (size_t i = 0; i < b.origins.size(); ++i)
        new_paths.push_back(b.image_paths[i].empty() ? b.origins[i] : b.image_paths[i]);
      if (o.progress()) bar.advance(static_cast<int64_t>(b.origins.size()));
    }
    if (o.progress()) bar.finish();
    const double es = std::chrono::duration<double>(std::chrono::steady_clock::now() - e0).count();
    r.embedded = static_cast<int64_t>(new_paths.size());
    r.embed_images_per_second = es > 0 ? r.embedded / es : 0;
    r.data_wait_seconds = loader.stats().wait_seconds;
    r.data_wait_share = es > 0 ? r.data_wait_seconds / es : 0;
    if (probe.defined()) {
      // The model alone, on every core (the loader has finished): best of 3 after a warm-up.
      double best = std::numeric_limits<double>::infinity();
      for (int it = 0; it < 4; ++it) {
        const auto p0 = std::chrono::steady_clock::now();
        m.model->encode_image(probe, /*normalize=*/true).cpu();  // .cpu() waits for a GPU
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - p0).count();
        if (it > 0) best = std::min(best, s);
      }
      r.model_images_per_second = probe.size(0) / best;
    }
    // Unusable files: everything asked for that did not come back.
    std::set<std::string> got(new_paths.begin(), new_paths.end());
    const auto& st = loader.stats();
    std::map<std::string, std::string> reason_of;
    for (const auto& [reason, examples] : st.examples)
      for (const auto& e : examples) reason_of[e] = reason;
    for (const auto& f : to_embed)
      if (!got.count(f)) r.skipped.push_back(reason_of.count(f) ? f + ": " + reason_of[f] : f + ": unreadable image");
    if (shards && st.skipped)
      r.skipped.push_back(fmt::format("{} samples of {} were unusable ({} reasons)", st.skipped, data, st.skipped_by_reason.size()));
    // A non-finite embedding (NaN/Inf weights or input) would outrank every real one: such rows
    // are left out and reported.
    if (!parts.empty()) {
      at::Tensor all = at::cat(parts);                           // [M, E]
      const at::Tensor finite = at::isfinite(all).all(1);        // [M]
      const int64_t bad = all.size(0) - finite.sum().item<int64_t>();
      if (bad > 0) {
        if (bad == all.size(0))
          throw std::runtime_error(fmt::format("{}: every embedding it gives is non-finite (NaN or Inf): the model's "
                                               "weights are broken; nothing was written to {}",
                                               m.dir, out));
        const auto keep = finite.nonzero().squeeze(1);  // [M - bad]
        const auto* f = finite.data_ptr<bool>();
        std::vector<std::string> finite_paths;
        for (size_t i = 0; i < new_paths.size(); ++i) {
          if (f[i]) finite_paths.push_back(new_paths[i]);
          else r.skipped.push_back(new_paths[i] + ": non-finite embedding (NaN or Inf)");
        }
        new_paths = std::move(finite_paths);
        parts = {all.index_select(0, keep)};
        r.embedded = static_cast<int64_t>(new_paths.size());
      }
    }
  }

  // Merge kept and new rows, sorted by path: an updated index equals one built from scratch.
  const auto dtype = o.dtype() == "fp32" ? at::kFloat : at::kHalf;  // int8 keeps fp16 rows to rerank
  const int64_t E = m.config.embed_dim();
  std::vector<std::string> all_paths = keep_paths;
  all_paths.insert(all_paths.end(), new_paths.begin(), new_paths.end());
  std::vector<at::Tensor> rows;
  if (!keep_rows.empty()) rows.push_back(old.embeddings.index_select(0, at::tensor(keep_rows, at::kLong)).to(dtype));
  if (!parts.empty()) rows.push_back(at::cat(parts).to(dtype));
  at::Tensor emb = rows.empty() ? at::empty({0, E}, dtype) : at::cat(rows);
  std::vector<int64_t> order(all_paths.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return all_paths[a] < all_paths[b]; });
  ImageIndex x;
  x.embeddings = emb.index_select(0, at::tensor(order, at::kLong)).contiguous();
  if (o.dtype() == "int8") x.int8 = quantize_rows(x.embeddings);
  x.stats = at::empty({static_cast<int64_t>(order.size()), 2}, at::kLong);
  auto* sp = x.stats.data_ptr<int64_t>();
  for (size_t i = 0; i < order.size(); ++i) {
    x.paths.push_back(all_paths[order[i]]);
    auto it = stat_of.find(x.paths.back());
    sp[2 * i] = it == stat_of.end() ? -1 : it->second.first;
    sp[2 * i + 1] = it == stat_of.end() ? -1 : it->second.second;
  }
  x.info = {{"model_fingerprint", m.fingerprint},
            {"model", m.dir},
            {"dtype", o.dtype()},
            {"embed_dim", std::to_string(E)},
            {"image_size", std::to_string(m.config.vision_cfg().image_size())},
            {"resize", enum_name(o.resize())},
            {"source", images.empty() ? data : fmt::format("{}", fmt::join(images, " "))},
            {"updated", now_iso8601()},
            {"created", old.info.count("created") ? old.info.at("created") : now_iso8601()}};
  // The FAISS index beside it, written first: the safetensors file that names its build id
  // replaces the old one only once the FAISS file it names is in place.
  if (type == "auto")  // an update keeps its type, even when its FAISS file went missing or stale
    type = old.info.count("ann_type") ? old.info.at("ann_type") : default_ann_type(x.size(), E, memory_bytes());
  const std::string faiss_file = ann_path(out);
  if (type != "exact" && x.size() > 0) {
    const auto a0 = std::chrono::steady_clock::now();
    const auto& prev = old.ann;
    auto param = [](const AnnIndex& a, const char* key) { return a.info().count(key) ? std::stoll(a.info().at(key)) : int64_t{0}; };
    const bool same = prev && prev->type() == type && (o.ann().nlist() == 0 || o.ann().nlist() == param(*prev, "nlist")) &&
                      (o.ann().pq_m() == 0 || o.ann().pq_m() == param(*prev, "pq_m")) &&
                      (type != "hnsw" || o.ann().hnsw_m() == param(*prev, "hnsw_m"));
    const bool refill = trained || (same && !o.retrain());
    AnnIndex ann = trained ? trained->refill(x.embeddings)
                   : refill ? prev->refill(x.embeddings)
                            : AnnIndex::build(x.embeddings, AnnOptions(o.ann()).type(type));
    r.ann_retrained = !refill;
    ann.info()["model_fingerprint"] = m.fingerprint;
    r.ann_bytes = ann.save(faiss_file);
    r.ann_type = type;
    r.ann_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - a0).count();
    x.info["ann_type"] = type;
    x.info["ann_build_id"] = ann.info()["build_id"];
    for (const char* key : {"nlist", "nprobe", "pq_m", "hnsw_m", "train_rows"})
      if (ann.info().count(key)) x.info[std::string("ann_") + key] = ann.info()[key];
  }
  x.save(out);
  if (type == "exact" || x.size() == 0) std::remove(faiss_file.c_str());  // a FAISS file of an earlier build is stale now
  if (old.info.count("ann_ivfdata"))  // a merged index rebuilt whole: its on-disk lists are no one's now
    std::remove((fs::path(out).parent_path() / old.info["ann_ivfdata"]).c_str());
  r.total = x.size();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

IndexReport merge_indexes(const std::vector<std::string>& shards, const std::string& out) {
  TORCH_CHECK(shards.size() >= 2, "index --merge: give at least two indexes to merge");
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<ImageIndex> parts;
  for (const auto& p : shards) {
    parts.push_back(ImageIndex::open(p, /*load_ann=*/false));  // FAISS indexes loaded once, below, to merge
    const auto& x = parts.back();
    if (x.model_fingerprint() != parts[0].model_fingerprint())
      throw std::runtime_error(fmt::format("{}: built by model fingerprint {}, {} by {}: shards must come from one model", p,
                                           x.model_fingerprint(), shards[0], parts[0].model_fingerprint()));
    if (!x.info.count("ann_type") || x.info.at("ann_type") == "exact")
      throw std::invalid_argument(fmt::format("{}: has no FAISS index (build shards with --type ivf-pq or ivf-flat)", p));
    if (x.embeddings.scalar_type() != parts[0].embeddings.scalar_type() || x.int8.codes.defined() != parts[0].int8.codes.defined())
      throw std::invalid_argument(fmt::format("{}: its --dtype differs from {}'s", p, shards[0]));
  }
  // Every row, sorted by path across the shards: the merged index equals one built at once.
  struct Row {
    const std::string* path;
    size_t part;
    int64_t row;
  };
  std::vector<Row> rows;
  for (size_t p = 0; p < parts.size(); ++p)
    for (int64_t r = 0; r < parts[p].size(); ++r) rows.push_back({&parts[p].paths[r], p, r});
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return *a.path < *b.path; });
  std::vector<std::vector<int64_t>> id_maps(parts.size());
  for (size_t p = 0; p < parts.size(); ++p) id_maps[p].resize(static_cast<size_t>(parts[p].size()));
  std::vector<std::vector<int64_t>> from(parts.size()), to(parts.size());
  ImageIndex x;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (i > 0 && *rows[i].path == *rows[i - 1].path)
      throw std::invalid_argument(fmt::format("{} is in {} and in {}: a file belongs to one shard", *rows[i].path,
                                              shards[rows[i - 1].part], shards[rows[i].part]));
    id_maps[rows[i].part][static_cast<size_t>(rows[i].row)] = static_cast<int64_t>(i);
    from[rows[i].part].push_back(rows[i].row);
    to[rows[i].part].push_back(static_cast<int64_t>(i));
    x.paths.push_back(*rows[i].path);
  }
  const int64_t N = static_cast<int64_t>(rows.size());
  x.embeddings = at::empty({N, parts[0].embeddings.size(1)}, parts[0].embeddings.scalar_type());
  x.stats = at::empty({N, 2}, at::kLong);
  for (size_t p = 0; p < parts.size(); ++p) {
    const auto src = at::tensor(from[p], at::kLong), dst = at::tensor(to[p], at::kLong);
    x.embeddings.index_copy_(0, dst, parts[p].embeddings.index_select(0, src));
    x.stats.index_copy_(0, dst, parts[p].stats.index_select(0, src));
  }
  if (parts[0].int8.codes.defined()) x.int8 = quantize_rows(x.embeddings);
  // The FAISS lists, renumbered and merged onto disk beside OUT under a name of their own build,
  // so an index being searched keeps its file until this one replaces it.
  std::vector<AnnIndex> anns;
  for (size_t p = 0; p < parts.size(); ++p) {
    const auto id = parts[p].info.find("ann_build_id");
    anns.push_back(AnnIndex::load(ann_path(shards[p]), parts[p].model_fingerprint(), parts[p].size(), id->second));
  }
  const std::string previous = fs::exists(out) ? ImageIndex::open(out, false).info["ann_ivfdata"] : "";
  AnnIndex merged = AnnIndex::merge_on_disk(std::move(anns), id_maps, shards, ann_path(out));
  const std::string ivfdata = (fs::path(out).parent_path() / merged.info()["ivfdata"]).string();
  merged.info()["model_fingerprint"] = parts[0].model_fingerprint();
  IndexReport r;
  r.ann_bytes = merged.save(ann_path(out));
  r.ann_type = merged.type();
  x.info = parts[0].info;
  x.info["source"] = fmt::format("merge of {}", fmt::join(shards, " "));
  x.info["updated"] = now_iso8601();
  x.info["ann_build_id"] = merged.info()["build_id"];
  x.info["ann_ivfdata"] = fs::path(ivfdata).filename().string();
  x.save(out);
  if (!previous.empty() && previous != x.info["ann_ivfdata"]) std::remove((fs::path(out).parent_path() / previous).c_str());
  r.total = r.kept = N;
  r.ann_bytes += static_cast<int64_t>(fs::file_size(ivfdata));
  r.seconds = r.ann_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

at::Tensor embed_texts(LoadedModel& m, const std::vector<std::string>& texts) {
  torch::NoGradGuard no_grad;
  auto ids = tokenize(*m.tokenizer, texts, m.config.text_cfg().context_length()).to(m.model->device());  // [Q, T]
  return m.model->encode_text(ids, /*normalize=*/true).cpu();
}

void check_index_model(const ImageIndex& index, const std::string& index_path, const LoadedModel& m) {
  if (index.model_fingerprint() == m.fingerprint) return;
  const auto model = index.info.find("model");
  throw std::runtime_error(fmt::format("{}: this index was built by model {} (fingerprint {}), not by {} (fingerprint {}); "
                                       "search with that model or rebuild the index with torchclip index",
                                       index_path, model == index.info.end() ? "?" : model->second, index.model_fingerprint(),
                                       m.dir, m.fingerprint));
}

ResizeMode index_resize_mode(const ImageIndex& index, const std::string& index_path) {
  ResizeMode resize = ResizeMode::kPil;
  const auto it = index.info.find("resize");
  if (it != index.info.end() && !try_parse_enum(it->second, resize))
    throw std::runtime_error(fmt::format("{}: its metadata says resize '{}', which is not one of: {}", index_path, it->second,
                                         fmt::join(EnumNames<ResizeMode>::get(), ", ")));
  return resize;
}

void preprocess_image_bytes(const LoadedModel& m, std::string_view bytes, ResizeMode resize, at::Tensor& out,
                            int64_t max_pixels) {
  data::require_image_decoders("an image query");
#if TORCHCLIP_HAVE_OPENCV
  const cv::Mat bgr = data::decode_image(bytes, max_pixels);
  const int64_t S = m.config.vision_cfg().image_size();
  out = at::empty({3, S, S}, at::kFloat);
  std::mt19937_64 rng(0);  // the eval transform draws nothing; the signature wants a generator
  data::transform_image(bgr, data::ImageTransformOptions().image_size(S).resize(resize), rng, out);
#endif
}

at::Tensor embed_image_file(LoadedModel& m, const std::string& path, ResizeMode resize) {
  torch::NoGradGuard no_grad;
  at::Tensor img;  // [3, S, S]
  try {
    preprocess_image_bytes(m, read_file(path), resize, img);
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("{}: cannot use this image as a query: {}", path, e.what()));
  }
  return m.model->encode_image(img.unsqueeze(0).to(m.model->device()), /*normalize=*/true).cpu();
}

}  // namespace torchclip
