// Exact search: a fused fp16/fp32 dot-product scan over row blocks, in parallel, with a top-k
// heap per query. AVX2+F16C on x86-64 when the CPU has it; a portable loop elsewhere.
#include "search/scan.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define TORCHCLIP_X86 1
#endif

#include <algorithm>
#include <functional>
#include <mutex>
#include <vector>

namespace torchclip {

namespace {

using Scored = std::pair<float, int64_t>;  // (score, row)

/// The k best (score, row) pairs seen so far: a min-heap, the worst on top.
struct TopK {
  int64_t k = 0;
  std::vector<Scored> heap;
  void push(float s, int64_t row) {
    if (static_cast<int64_t>(heap.size()) < k) {
      heap.emplace_back(s, row);
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    } else if (s > heap.front().first) {
      std::pop_heap(heap.begin(), heap.end(), std::greater<>());
      heap.back() = {s, row};
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    }
  }
};

/// scores[r * Q + q] = rows[r] . queries[q] for n rows of E halves or floats.
template <typename T>
void dot_rows_scalar(const T* rows, int64_t n, int64_t E, const float* queries, int64_t Q, float* scores) {
  for (int64_t r = 0; r < n; ++r)
    for (int64_t q = 0; q < Q; ++q) {
      float s = 0;
      for (int64_t e = 0; e < E; ++e) s += static_cast<float>(rows[r * E + e]) * queries[q * E + e];
      scores[r * Q + q] = s;
    }
}

#ifdef TORCHCLIP_X86
__attribute__((target("avx2,fma,f16c"))) float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

/// AVX2: E a multiple of 16; halves widened in registers (F16C), never written back as floats.
__attribute__((target("avx2,fma,f16c"))) void dot_rows_avx2(const c10::Half* rows, int64_t n, int64_t E,
                                                            const float* queries, int64_t Q, float* scores) {
  for (int64_t r = 0; r < n; ++r) {
    const auto* row = reinterpret_cast<const __m128i*>(rows + r * E);
    for (int64_t q = 0; q < Q; ++q) {
      const float* qv = queries + q * E;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      for (int64_t e = 0; e < E; e += 16) {
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(row + e / 8)), _mm256_loadu_ps(qv + e), a0);
        a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(row + e / 8 + 1)), _mm256_loadu_ps(qv + e + 8), a1);
      }
      scores[r * Q + q] = hsum(_mm256_add_ps(a0, a1));
    }
  }
}

__attribute__((target("avx2,fma,f16c"))) void dot_rows_avx2(const float* rows, int64_t n, int64_t E, const float* queries,
                                                            int64_t Q, float* scores) {
  for (int64_t r = 0; r < n; ++r) {
    const float* row = rows + r * E;
    for (int64_t q = 0; q < Q; ++q) {
      const float* qv = queries + q * E;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      for (int64_t e = 0; e < E; e += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(row + e), _mm256_loadu_ps(qv + e), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(row + e + 8), _mm256_loadu_ps(qv + e + 8), a1);
      }
      scores[r * Q + q] = hsum(_mm256_add_ps(a0, a1));
    }
  }
}

bool have_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  return ok;
}
#else
bool have_avx2() { return false; }
template <typename T>
void dot_rows_avx2(const T* rows, int64_t n, int64_t E, const float* queries, int64_t Q, float* scores) {
  dot_rows_scalar(rows, n, E, queries, Q, scores);
}
#endif

template <typename T>
std::vector<std::vector<SearchHit>> scan(const T* rows, int64_t N, int64_t E, const at::Tensor& queries, int64_t k) {
  const int64_t Q = queries.size(0);
  auto qc = queries.to(at::kFloat).contiguous();
  const float* qv = qc.data_ptr<float>();
  const bool vec = have_avx2() && E % 16 == 0;
  std::vector<TopK> best(Q, TopK{k, {}});
  std::mutex merge;
  constexpr int64_t kBlock = 256;  // rows scored together, then offered to the heaps
  at::parallel_for(0, N, 16384, [&](int64_t begin, int64_t end) {
    std::vector<TopK> local(Q, TopK{k, {}});
    std::vector<float> scores(kBlock * Q);
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t n = std::min(kBlock, end - b);
      if (vec) dot_rows_avx2(rows + b * E, n, E, qv, Q, scores.data());
      else dot_rows_scalar(rows + b * E, n, E, qv, Q, scores.data());
      for (int64_t r = 0; r < n; ++r)
        for (int64_t q = 0; q < Q; ++q) local[q].push(scores[r * Q + q], b + r);
    }
    std::lock_guard<std::mutex> lock(merge);
    for (int64_t q = 0; q < Q; ++q)
      for (const auto& [s, row] : local[q].heap) best[q].push(s, row);
  });
  std::vector<std::vector<SearchHit>> out(Q);
  for (int64_t q = 0; q < Q; ++q) {
    auto h = best[q].heap;
    std::sort(h.begin(), h.end(), [](const Scored& a, const Scored& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
    for (const auto& [s, row] : h) out[q].push_back({row, s});
  }
  return out;
}

}  // namespace

std::vector<std::vector<SearchHit>> search_index(const at::Tensor& embeddings, const at::Tensor& queries, int64_t k) {
  TORCH_CHECK(embeddings.dim() == 2 && queries.dim() == 2 && embeddings.size(1) == queries.size(1),
              "search: embeddings [N, E] and queries [Q, E] must share E; got ", embeddings.sizes(), " and ", queries.sizes());
  TORCH_CHECK(k > 0, "search: --k must be positive");
  auto emb = embeddings.is_contiguous() ? embeddings : embeddings.contiguous();
  const int64_t N = emb.size(0), E = emb.size(1);
  if (emb.scalar_type() == at::kHalf) return scan(emb.data_ptr<c10::Half>(), N, E, queries, k);
  TORCH_CHECK(emb.scalar_type() == at::kFloat, "search: embeddings must be fp16 or fp32");
  return scan(emb.data_ptr<float>(), N, E, queries, k);
}

}  // namespace torchclip
