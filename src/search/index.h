// Image indexes for retrieval (`torchclip index` / `torchclip search`): normalised image
// embeddings (fp16 or fp32) with their paths, file sizes and times, and the fingerprint of the
// model that made them, in one safetensors file that is memory-mapped when searched. Updating an
// index embeds only new or changed files and prunes vanished ones. Search is exact
// (search/scan.h), or an int8 scan with an exact rerank for indexes built with --dtype int8.
#pragma once

#include "config/enums.h"
#include "data/source.h"
#include "io/safetensors.h"
#include "model/model_dir.h"
#include "search/ann.h"
#include "search/scan.h"

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace torchclip {

struct ImageIndex {
  at::Tensor embeddings;           // [N, E] half or float, rows L2-normalised
  std::vector<std::string> paths;  // [N] file paths (or sample origins for tar shards)
  at::Tensor stats;                // [N, 2] int64: file size and mtime (ns); -1 when not a file
  Int8Rows int8;                   // dtype int8: the rows scanned (codes [N, E], scales [N]); fp16 embeddings rerank
  std::map<std::string, std::string> info;  // model_fingerprint, model, dtype, source, created, ...
  std::shared_ptr<const FileMapping> mapping;  // set by open(): the file the embeddings view
  std::shared_ptr<const AnnIndex> ann;         // set by open() when a FAISS index was built beside it (INDEX.faiss)

  int64_t size() const { return static_cast<int64_t>(paths.size()); }
  const std::string& model_fingerprint() const;
  /// Memory-maps PATH (instant for any size) and loads the FAISS index beside it, if it was built
  /// with one; throws naming the file if it is not an index, or its FAISS file is missing or stale.
  static ImageIndex open(const std::string& path, bool load_ann = true);
  /// The FAISS index at ann_path(path) that the metadata names (none for exact indexes).
  void load_ann(const std::string& path);
  /// After open(): throws naming the file if it was truncated or rewritten in place since (the
  /// paths were read at open, the embeddings are read from the mapping as searched). An index
  /// replaced by rename, as `torchclip index` writes, leaves this one intact.
  void check_intact() const {
    if (mapping) mapping->check_intact();
  }
  void save(const std::string& path) const;
  /// The top k rows for each query [Q, E]: unless `exact`, the FAISS index when there is one
  /// (IVF-PQ reranks `candidates` rows exactly; 0: 400), else an int8 scan reranking `candidates` rows (0: 100)
  /// when the index has int8 codes; else, and with `exact`, the exact scan. A file truncated
  /// under the scan is an error naming it (never SIGBUS).
  std::vector<std::vector<SearchHit>> search(const at::Tensor& queries, int64_t k, int64_t candidates = 0,
                                             bool exact = false, AnnSearchOptions ann_options = {}) const;
  /// "faiss:TYPE", "int8+rerank" or "exact": what search() uses unless told `exact`.
  std::string method() const;
};

struct IndexOptions {
  // fp16 or fp32 rows; int8: fp16 rows plus int8 codes with a scale per row, which a single query
  // scans (half the bytes of fp16) before an exact fp16 rerank of the best candidates.
  TORCH_ARG(std::string, dtype) = "fp16";
  TORCH_ARG(int64_t, batch_size) = 64;
  TORCH_ARG(int64_t, workers) = 2;
  TORCH_ARG(ResizeMode, resize) = ResizeMode::kPil;
  TORCH_ARG(bool, progress) = true;
  // After the build, re-time the model alone on one already-decoded batch (no I/O, no decoding),
  // so the report can say how close the build came to the model's own embedding speed.
  TORCH_ARG(bool, measure_model) = false;
  // An approximate index beside it (INDEX.faiss): type exact (none), flat, ivf-flat, ivf-pq, hnsw
  // or auto (default_ann_type: exact up to 100k rows). An update refills the trained FAISS index
  // with the new rows (no retraining) unless its type or parameters change or `retrain`.
  TORCH_ARG(AnnOptions, ann) = {};
  TORCH_ARG(bool, retrain) = false;
  // An index whose FAISS training (IVF centroids and codebooks) this one reuses instead of
  // training: shards built apart with one training can be merged (merge_indexes).
  TORCH_ARG(std::string, trained) = "";
};

struct IndexReport {
  int64_t total = 0, embedded = 0, kept = 0, pruned = 0;
  std::vector<std::string> skipped;  // "path: reason"
  double seconds = 0, embed_images_per_second = 0;
  // Time the embedding loop spent blocked on the loader (reading + decoding not yet done), and
  // its share of the embedding time: near 0 means the build ran at the model's speed.
  double data_wait_seconds = 0, data_wait_share = 0;
  double model_images_per_second = 0;  // measure_model: encode_image alone, 0 when not measured
  std::string ann_type = "exact";      // the FAISS index written beside it, or exact (none)
  bool ann_retrained = false;          // trained now (not refilled from the previous build's training)
  double ann_seconds = 0;              // training and adding
  int64_t ann_bytes = 0;
  std::string to_json() const;
};

/// Builds OUT from image files and folders (`images`) or a data source (`data`: CSV, ImageFolder
/// tree or tar shards). When OUT exists and was built by the same model, only new or changed
/// files are embedded and vanished ones are dropped (tar shards are always embedded whole).
/// An existing index from another model is refused, naming both fingerprints.
IndexReport build_index(LoadedModel& m, const std::vector<std::string>& images, const std::string& data,
                        const data::CsvOptions& csv, const std::string& out, const IndexOptions& options);

/// Merges `shards` (indexes of one model whose FAISS IVF indexes share one training: built with
/// IndexOptions::trained naming the first) into OUT: rows sorted by path across them, and one
/// FAISS index whose inverted lists are FAISS's on-disk lists (OUT.faiss.<build>.ivfdata,
/// memory-mapped when searched). A path in two shards is an error naming both.
IndexReport merge_indexes(const std::vector<std::string>& shards, const std::string& out);

/// Throws naming `index_path`, the model that built it and both fingerprints when `m` did not.
void check_index_model(const ImageIndex& index, const std::string& index_path, const LoadedModel& m);
/// How the index's images were resized (its metadata; kPil for indexes that do not say), so an
/// image query is preprocessed as they were. Throws naming the file for an unknown mode.
ResizeMode index_resize_mode(const ImageIndex& index, const std::string& index_path);

/// The normalised text embeddings [Q, E] of `texts`.
at::Tensor embed_texts(LoadedModel& m, const std::vector<std::string>& texts);
/// The eval transform of encoded image bytes into `out` [3, S, S] float (S: the model's image
/// size), for one image query. Images over `max_pixels` (read from the header, before decoding)
/// and undecodable bytes throw data::SampleError with its reason.
void preprocess_image_bytes(const LoadedModel& m, std::string_view bytes, ResizeMode resize, at::Tensor& out,
                            int64_t max_pixels = 89478485);
/// The normalised embedding [1, E] of one image file (eval transform). Throws naming the file.
at::Tensor embed_image_file(LoadedModel& m, const std::string& path, ResizeMode resize = ResizeMode::kPil);

}  // namespace torchclip
