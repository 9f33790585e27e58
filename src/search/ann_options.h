// The options of FAISS indexes (search/ann.h), apart from it: the server's engine header names
// them without pulling in tensor or FAISS headers.
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <string>

namespace torchclip {

struct AnnOptions {
  TORCH_ARG(std::string, type) = "auto";  // exact (no FAISS index), flat, ivf-flat, ivf-pq, hnsw; auto: default_ann_type
  TORCH_ARG(int64_t, nlist) = 0;          // IVF lists; 0: 2 sqrt(N) rounded to a power of two, 16 to 65536
  TORCH_ARG(int64_t, pq_m) = 0;           // IVF-PQ bytes per row (sub-quantisers of 8 bits); 0: E / 8
  TORCH_ARG(int64_t, hnsw_m) = 32;        // HNSW neighbours per node
  TORCH_ARG(int64_t, train_rows) = 0;     // rows sampled to train IVF; 0: min(N, max(256, 40 nlist))
  TORCH_ARG(uint64_t, seed) = 1234;       // the training sample's draw and k-means' seed
};

struct AnnSearchOptions {
  TORCH_ARG(int64_t, nprobe) = 0;        // IVF lists visited; 0: the index's default (nlist / 32, at least 8)
  TORCH_ARG(int64_t, ef_search) = 0;     // HNSW search breadth; 0: max(64, 2 x the rows asked for)
  TORCH_ARG(int64_t, candidates) = 400;  // IVF-PQ: rows reranked exactly (on the index's own rows) per query
};

}  // namespace torchclip
