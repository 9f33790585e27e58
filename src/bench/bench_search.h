// `torchclip bench search`: top-k text->image queries against a synthetic index (default
// 1M x 512, fp16), timed per query for single queries and for batches; in the same run the same
// search written in PyTorch from Python (matmul + topk on the same matrix size and dtype).
#pragma once

#include <torch/arg.h>

#include <string>

namespace torchclip {

struct BenchSearchOptions {
  TORCH_ARG(int64_t, rows) = 1000000;
  TORCH_ARG(int64_t, dim) = 512;
  TORCH_ARG(int64_t, k) = 10;
  TORCH_ARG(int64_t, queries) = 20;
  TORCH_ARG(int64_t, batch) = 16;  // queries per call in the batched measurement
  TORCH_ARG(std::string, dtype) = "fp16";
  TORCH_ARG(bool, compare) = true;
  TORCH_ARG(std::string, python) = "python3";
};

struct BenchSearchResult {
  BenchSearchOptions options;
  double ms_per_query = 0, ms_per_query_batched = 0;  // medians
  double torch_ms_per_query = 0;                      // 0 when not run
  bool exact = false;  // our top-k equals a float64 reference on the checked queries
  std::string note;
  std::string to_json() const;
  std::string to_text() const;
};

BenchSearchResult bench_search(const BenchSearchOptions& options);

}  // namespace torchclip
