// Approximate nearest-neighbour indexes on FAISS (Debian's libfaiss-dev, CPU) beside an image
// index: `torchclip index --type flat | ivf-flat | ivf-pq | hnsw`. The FAISS index holds the same
// rows as the safetensors index, with the row number as id, in inner-product metric (rows are
// L2-normalised, so it is the cosine). Its file, INDEX.faiss, starts with a small JSON header (the
// model fingerprint, the row count, the type and its parameters, and a build id that the
// safetensors index records too), so a FAISS file from another model or another build is refused
// by name instead of answering with the wrong rows.
#pragma once

#include "search/ann_options.h"
#include "search/scan.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace faiss {
struct Index;
}

namespace torchclip {

/// As autofaiss chooses: "exact" (torchclip's own scan, no FAISS index) up to 100k rows, "hnsw"
/// while float rows and the graph fit in a quarter of `memory_bytes`, "ivf-pq" beyond.
std::string default_ann_type(int64_t rows, int64_t dim, int64_t memory_bytes);

class AnnIndex {
 public:
  AnnIndex();
  ~AnnIndex();
  AnnIndex(AnnIndex&&) noexcept;
  AnnIndex& operator=(AnnIndex&&) noexcept;

  /// Trains (IVF: on a sample of `rows`) and adds every row of `rows` [N, E] (half or float,
  /// normalised) with its row number as id. Throws naming the option for impossible parameters.
  static AnnIndex build(const at::Tensor& rows, const AnnOptions& options);
  /// The same trained index (IVF centroids and codebooks) emptied and filled with `rows`: an
  /// update embeds only new files and does not retrain; flat and HNSW (no training) are built
  /// again with the same parameters.
  AnnIndex refill(const at::Tensor& rows) const;

  /// IVF indexes built from one training (build() once, then refill() per shard: the same
  /// train_id) merged into one whose inverted lists are FAISS's on-disk lists, memory-mapped when
  /// read, as FAISS does for billion-row indexes: PREFIX.<build id>.ivfdata, fsynced, removed if
  /// the merge fails. `id_maps[s][r]` is the merged row of row r of part s; `names` name the parts
  /// in errors (one trained apart, of another type, or merged already).
  static AnnIndex merge_on_disk(std::vector<AnnIndex> parts, const std::vector<std::vector<int64_t>>& id_maps,
                                const std::vector<std::string>& names, const std::string& ivfdata_prefix);

  /// Writes PATH (the header, then FAISS's own format) atomically; returns FAISS's bytes.
  int64_t save(const std::string& path) const;
  /// Reads PATH; throws naming it when it is not a torchclip FAISS file, or its model fingerprint,
  /// row count or build id differ from the index it must belong to.
  static AnnIndex load(const std::string& path, const std::string& model_fingerprint, int64_t rows, const std::string& build_id);

  /// Top k for each query [Q, E] (float), best first, with the exact score of each row: flat and
  /// IVF-Flat score float copies of the rows; IVF-PQ (its `candidates` rows) and HNSW (its k,
  /// found by L2 distance) are rescored on `exact_rows` [N, E] (the index's own rows).
  std::vector<std::vector<SearchHit>> search(const at::Tensor& queries, int64_t k, const AnnSearchOptions& options,
                                             const at::Tensor& exact_rows) const;

  const std::string& type() const { return info_.at("type"); }
  /// type, rows, dim, build_id, train_id, and as the type has them nlist, nprobe, pq_m, hnsw_m, train_rows, ivfdata;
  /// the caller adds model_fingerprint before save(); load() adds bytes.
  std::map<std::string, std::string>& info() { return info_; }
  const std::map<std::string, std::string>& info() const { return info_; }

 private:
  struct FaissDeleter {
    void operator()(faiss::Index* p) const;
  };
  std::map<std::string, std::string> info_;
  std::unique_ptr<faiss::Index, FaissDeleter> index_;
};

/// The FAISS file of the index at `index_path`: INDEX.faiss.
inline std::string ann_path(const std::string& index_path) { return index_path + ".faiss"; }

}  // namespace torchclip
