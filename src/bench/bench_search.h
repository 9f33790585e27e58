// `torchclip bench search`: top-k text->image queries against a synthetic index (default
// 1M x 512, fp16). It measures this machine's memory read bandwidth first, since one query over
// fp16 rows is bandwidth-bound: the scan's GB/s against it is the figure to push toward 1. Then
// per-query times at batch sizes (1, 16, 256 by default), the int8 scan with an exact rerank
// (its recall@k against an fp32 exact scan), and in the same run the same searches written in
// PyTorch from Python (matmul + topk on the same matrix size and dtype).
#pragma once

#include "search/ann_options.h"

#include <torch/arg.h>

#include <map>
#include <string>
#include <vector>

namespace torchclip {

struct BenchSearchOptions {
  TORCH_ARG(int64_t, rows) = 1000000;
  TORCH_ARG(int64_t, dim) = 512;
  TORCH_ARG(int64_t, k) = 10;
  TORCH_ARG(int64_t, queries) = 20;  // single queries timed (median), and the recall sample
  TORCH_ARG(std::vector<int64_t>, batches) = std::vector<int64_t>{1, 16, 256};
  TORCH_ARG(std::string, dtype) = "fp16";  // the rows of the exact scan: fp16 or fp32
  TORCH_ARG(int64_t, candidates) = 100;    // int8 scan: rows per query reranked exactly
  TORCH_ARG(bool, compare) = true;
  TORCH_ARG(std::string, python) = "python3";
};

struct BenchSearchBatch {
  int64_t batch = 0;
  double ms_per_query = 0, torch_ms_per_query = 0;  // medians; torch 0 when not run
};

struct BenchSearchResult {
  BenchSearchOptions options;
  double bandwidth_gbs = 0;  // streaming read, every thread
  double scan_gbs = 0;       // index bytes / single-query time
  double scan_share = 0;     // median over queries of scan GB/s / the bandwidth measured just before
  std::vector<BenchSearchBatch> batches;
  double int8_ms_per_query = 0, int8_recall = 0, int8_scan_gbs = 0;
  double fp16_recall = 0;  // the exact scan's rows are rounded: its recall against fp32
  bool exact = false;      // our top-k equals a float64 reference on the checked queries
  std::string note;
  double ms_per_query() const { return batches.empty() ? 0 : batches.front().ms_per_query; }
  std::string to_json() const;
  std::string to_text() const;
};

BenchSearchResult bench_search(const BenchSearchOptions& options);

/// `bench search --type T`: a FAISS index (search/ann.h) over synthetic embeddings with CLIP's
/// cluster structure (random unit rows have no near neighbours to find), against the exact scan
/// of the same fp16 rows: build time, bytes, per-query latency and recall@k.
struct BenchAnnOptions {
  TORCH_ARG(int64_t, rows) = 1000000;
  TORCH_ARG(int64_t, dim) = 512;
  TORCH_ARG(int64_t, k) = 10;
  TORCH_ARG(int64_t, queries) = 200;   // single queries timed (p50, p99) and scored for recall
  TORCH_ARG(int64_t, clusters) = 0;    // centres of the synthetic data; 0: rows / 500
  TORCH_ARG(AnnOptions, ann) = {};
  // Search settings measured on the one built index (FAISS users sweep nprobe or efSearch).
  TORCH_ARG(std::vector<AnnSearchOptions>, searches) = std::vector<AnnSearchOptions>{AnnSearchOptions()};
};

struct BenchAnnPoint {
  AnnSearchOptions search;  // as asked (0: the index's default)
  double p50_ms = 0, p99_ms = 0, recall = 0;
};

struct BenchAnnResult {
  BenchAnnOptions options;
  std::map<std::string, std::string> info;  // the built index's type and parameters
  double build_seconds = 0, data_seconds = 0;
  int64_t bytes = 0;                        // FAISS's own format
  double exact_ms = 0;                      // the exact fp16 scan's median single query, same rows
  std::vector<BenchAnnPoint> points;        // one per search setting
  std::string to_json() const;
  std::string to_text() const;
};

BenchAnnResult bench_ann(const BenchAnnOptions& options);

}  // namespace torchclip
