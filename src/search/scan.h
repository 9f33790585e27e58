// Exact top-k search over a matrix of normalised embeddings, and an int8 scan with an exact rerank.
//
// One query over N rows reads every row once and does 2 flops per byte read (fp16): it is bound by
// memory bandwidth, so the single-query scan streams rows once through fused dot products and a
// top-k heap, never materialising scores. Many queries reuse each row: from kBlockedQueries
// queries on, blocks of rows that stay in cache are scored against all queries by a register-
// blocked kernel (2 rows x 4 queries per step), which is compute-bound instead.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <vector>

namespace torchclip {

struct SearchHit {
  int64_t row = 0;
  float score = 0;
};

/// The rows of a memory-mapped index vanished while they were read (the file was truncated by
/// another process): the search is abandoned instead of dying of SIGBUS.
class MappedRowsVanished : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// From this many queries on, search_index scores cache-resident blocks of rows against all of
/// them at once (and search_int8 leaves the int8 rows for the exact scan).
constexpr int64_t kBlockedQueries = 4;

/// Exact top-k rows of `embeddings` [N, E] (half or float) for each of `queries` [Q, E] (float),
/// best first (ties: lower row first). Scans rows in parallel blocks without converting the matrix.
std::vector<std::vector<SearchHit>> search_index(const at::Tensor& embeddings, const at::Tensor& queries, int64_t k);

/// Rows quantised to int8 with one scale per row: rows[i] ~= codes[i] * scales[i].
struct Int8Rows {
  at::Tensor codes;   // [N, E] int8
  at::Tensor scales;  // [N] float: max |rows[i]| / 127
};

/// Symmetric per-row quantisation of `rows` [N, E] (half or float). A zero row gets scale 0.
Int8Rows quantize_rows(const at::Tensor& rows);

/// Top-k by an int8 scan of `q8` for `candidates` rows per query, then their exact scores against
/// `exact` [N, E] (the same rows in fp16 or fp32), best first. The result equals search_index on
/// `exact` whenever the true top k are among the int8 scan's top `candidates`.
std::vector<std::vector<SearchHit>> search_int8(const Int8Rows& q8, const at::Tensor& exact, const at::Tensor& queries,
                                                int64_t k, int64_t candidates);

/// The share of reference[q]'s rows found in found[q], averaged over queries (recall@k when each
/// reference list holds the k true nearest rows).
double recall_at_k(const std::vector<std::vector<int64_t>>& found, const std::vector<std::vector<int64_t>>& reference);

/// A buffer far larger than the caches that every thread streams through: the read bandwidth a
/// bandwidth-bound scan can approach.
class StreamingRead {
 public:
  explicit StreamingRead(int64_t bytes = int64_t{1} << 30);
  /// One pass over the buffer: GB/s (1e9 bytes per second).
  double gbs();

 private:
  struct Free {
    void operator()(uint64_t* p) const { std::free(p); }
  };
  int64_t bytes_;
  std::unique_ptr<uint64_t, Free> buffer_;
};

}  // namespace torchclip
