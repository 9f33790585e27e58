// Exact top-k search over a matrix of normalised embeddings.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace torchclip {

struct SearchHit {
  int64_t row = 0;
  float score = 0;
};

/// Exact top-k rows of `embeddings` [N, E] (half or float) for each of `queries` [Q, E] (float),
/// best first. Scans rows in parallel blocks without converting the matrix.
std::vector<std::vector<SearchHit>> search_index(const at::Tensor& embeddings, const at::Tensor& queries, int64_t k);

}  // namespace torchclip
