// Exact search: fused fp16/fp32/int8 dot-product scans over row blocks, in parallel, with a top-k
// heap per query, and a register-blocked kernel for batches of queries. AVX2+F16C on x86-64 when
// the CPU has it; portable loops elsewhere.
#include "search/scan.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define TORCHCLIP_X86 1
#endif

#include <algorithm>
#include <csetjmp>
#include <csignal>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <set>
#include <system_error>
#include <thread>
#include <type_traits>
#include <signal.h>
#include <setjmp.h>
#include <vector>

namespace torchclip {

namespace {

/// a ranks before b: a higher score, or an equal score and a lower row.
inline bool better(const SearchHit& a, const SearchHit& b) { return a.score > b.score || (a.score == b.score && a.row < b.row); }

/// The k best hits seen so far: a heap with the worst on top, so a row that cannot enter costs one
/// comparison.
struct TopK {
  int64_t k = 0;
  std::vector<SearchHit> heap;
  explicit TopK(int64_t k_) : k(k_) { heap.reserve(static_cast<size_t>(k_)); }
  void push(float s, int64_t row) {
    if (std::isnan(s)) s = -std::numeric_limits<float>::infinity();  // ranks last; keeps the order strict
    if (static_cast<int64_t>(heap.size()) < k) {
      heap.push_back({row, s});
      std::push_heap(heap.begin(), heap.end(), better);
    } else if (better({row, s}, heap.front())) {
      std::pop_heap(heap.begin(), heap.end(), better);
      heap.back() = {row, s};
      std::push_heap(heap.begin(), heap.end(), better);
    }
  }
  std::vector<SearchHit> sorted() const {
    auto h = heap;
    std::sort(h.begin(), h.end(), better);
    return h;
  }
};

/// One heap per query, filled by parallel workers and merged under a lock.
struct Results {
  std::vector<TopK> best;
  std::mutex merge;
  Results(int64_t Q, int64_t k) : best(static_cast<size_t>(Q), TopK(k)) {}
  void absorb(const std::vector<TopK>& local) {
    std::lock_guard<std::mutex> lock(merge);
    for (size_t q = 0; q < best.size(); ++q)
      for (const auto& h : local[q].heap) best[q].push(h.score, h.row);
  }
  std::vector<std::vector<SearchHit>> sorted() const {
    std::vector<std::vector<SearchHit>> out;
    for (const auto& b : best) out.push_back(b.sorted());
    return out;
  }
};

/// Calls f(begin, end) on at::get_num_threads() contiguous parts of [0, n) (fewer when a part
/// would be under `min_part`), each on its own std::thread, the first on the caller's. A
/// bandwidth-bound stream runs here at the machine's read rate; inside at::parallel_for's OpenMP
/// region the same scan ran 40-60% slower on this 2-core machine (45 against 29-33 ms for
/// 1M x 512 fp16), so the scans do not use it. (They call no ATen kernels, which would expect
/// at::parallel_for's region to keep their own threading off.)
template <typename F>
void for_each_range(int64_t n, int64_t min_part, F f) {
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n / std::max<int64_t>(min_part, 1)));
  std::vector<std::exception_ptr> errors(static_cast<size_t>(parts));
  auto run = [&](int64_t p) {
    try {
      f(n * p / parts, n * (p + 1) / parts);
    } catch (...) {
      errors[p] = std::current_exception();
    }
  };
  std::vector<std::thread> threads;
  int64_t started = 1;
  try {
    for (; started < parts; ++started) threads.emplace_back(run, started);
  } catch (const std::system_error&) {  // no thread to be had (EAGAIN): the rest run here
  }
  run(0);
  for (int64_t p = started; p < parts; ++p) run(p);
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// ---- reading memory-mapped rows that may vanish ------------------------------------------------
//
// An index is a memory-mapped file. If another process truncates it while it is scanned, the
// next read of a page past the new end raises SIGBUS, which would kill the process. The loops
// that read rows run under bus_guarded(): a SIGBUS inside one jumps back out of it (sigsetjmp /
// siglongjmp; the guarded code holds no objects with destructors, only raw loops over rows into
// caller-owned buffers) and the search fails with MappedRowsVanished. A SIGBUS anywhere else goes
// to the previous handler, or kills the process as before.

thread_local sigjmp_buf* t_bus_jump = nullptr;
struct sigaction g_previous_bus;

void on_sigbus(int sig, siginfo_t* info, void* context) {
  if (sigjmp_buf* jump = t_bus_jump) siglongjmp(*jump, 1);
  if (g_previous_bus.sa_flags & SA_SIGINFO) {
    if (g_previous_bus.sa_sigaction && g_previous_bus.sa_sigaction != on_sigbus)
      return g_previous_bus.sa_sigaction(sig, info, context);
  } else if (g_previous_bus.sa_handler != SIG_DFL && g_previous_bus.sa_handler != SIG_IGN) {
    return g_previous_bus.sa_handler(sig);
  }
  ::signal(SIGBUS, SIG_DFL);  // not a guarded read: die of it, as without this handler
  ::raise(SIGBUS);
}

/// Installs on_sigbus once per process (one flag for every caller, so the previous handler it
/// chains to is never on_sigbus itself).
void install_bus_handler() {
  static std::once_flag installed;
  std::call_once(installed, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;  // NODEFER: leaving by siglongjmp leaves SIGBUS unblocked
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGBUS, &sa, &g_previous_bus);
  });
}

/// Runs f(); returns false if a SIGBUS interrupted it (f's effects so far are to be discarded).
/// An exception from f disarms the guard before it propagates.
template <typename F>
bool bus_guarded(F&& f) {
  install_bus_handler();
  sigjmp_buf jump;
  if (sigsetjmp(jump, /*savemask=*/0) != 0) {  // no signal-mask syscall per block
    t_bus_jump = nullptr;
    return false;
  }
  t_bus_jump = &jump;
  try {
    f();
  } catch (...) {
    t_bus_jump = nullptr;
    throw;
  }
  t_bus_jump = nullptr;
  return true;
}

[[noreturn]] void rows_vanished() {
  throw MappedRowsVanished("search: the index's rows could not be read: its file was truncated while it was searched");
}

// ---- dot-product kernels: one query against one row ------------------------------------------
//
// One row at a time, the whole row before the next: one sequential stream per thread. Scoring 4
// rows at once (4 interleaved streams, 8 FMA chains) ran at half the rate on this machine's AMD
// EPYC (a microbenchmark over 1M x 512 fp16: 37 ms one row at a time, 70-86 ms four at once;
// a plain streaming read of the same bytes 34 ms): the single-row scan is already at the read
// bandwidth, so more arithmetic parallelism buys nothing.

template <typename T, typename Q>
inline auto dot_scalar(const T* row, int64_t E, const Q* q) {
  using Acc = std::conditional_t<std::is_integral_v<Q>, int64_t, float>;
  Acc s = 0;
  for (int64_t e = 0; e < E; ++e) s += static_cast<Acc>(row[e]) * static_cast<Acc>(q[e]);
  return s;
}

/// out[i] = rows[i] . q for n rows.
template <typename T, typename Q>
void dot_rows_scalar(const T* rows, int64_t n, int64_t E, const Q* q, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(dot_scalar(rows + i * E, E, q));
}

/// out[j * n + i] = rows[i] . queries[j] for n rows and nq queries.
template <typename T>
void dot_block_multi_scalar(const T* rows, int64_t n, int64_t E, const float* queries, int64_t nq, float* out) {
  for (int64_t j = 0; j < nq; ++j) dot_rows_scalar(rows, n, E, queries + j * E, out + j * n);
}

#ifdef TORCHCLIP_X86
bool have_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  return ok;
}

__attribute__((target("avx2,fma,f16c"))) inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma,f16c"))) inline __m256 widen(const c10::Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
__attribute__((target("avx2,fma,f16c"))) inline __m256 widen(const float* p) { return _mm256_loadu_ps(p); }

/// E a multiple of 16; halves are widened in registers (F16C), never written back as floats.
template <typename T>
__attribute__((target("avx2,fma,f16c"))) inline float dot_avx2(const T* row, int64_t E, const float* q) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0;
  for (int64_t e = 0; e < E; e += 16) {
    a0 = _mm256_fmadd_ps(widen(row + e), _mm256_loadu_ps(q + e), a0);
    a1 = _mm256_fmadd_ps(widen(row + e + 8), _mm256_loadu_ps(q + e + 8), a1);
  }
  return hsum(_mm256_add_ps(a0, a1));
}

/// int8 codes widened to int16 against an int16 query: madd gives int32 pair sums (below 2^31
/// by the query's scale), exact in float below 2^24 and rounded once above it.
__attribute__((target("avx2,fma,f16c"))) inline float dot_avx2(const int8_t* row, int64_t E, const int16_t* q) {
  __m256i a = _mm256_setzero_si256();
  for (int64_t e = 0; e < E; e += 16) {
    const __m256i r16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + e)));
    a = _mm256_add_epi32(a, _mm256_madd_epi16(r16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + e))));
  }
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
  return static_cast<float>(_mm_cvtsi128_si32(s));
}
/// out[i] = rows[i] . q for n rows: the loop inside the target function, so the dot product
/// inlines (one call per block, not per row: an int8 row is only 32 iterations long).
template <typename T, typename Q>
__attribute__((target("avx2,fma,f16c"))) void dot_rows_avx2(const T* rows, int64_t n, int64_t E, const Q* q, float* out) {
  for (int64_t r = 0; r < n; ++r) out[r] = dot_avx2(rows + r * E, E, q);
}
/// out[i] = the sum of the 8 lanes of x_i.
__attribute__((target("avx2,fma,f16c"))) inline __m128 hsum4(__m256 x0, __m256 x1, __m256 x2, __m256 x3) {
  const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(x0, x1), _mm256_hadd_ps(x2, x3));  // lane j: x_j's halves
  return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

/// Rows a and b against queries q[0..3] (E floats apart): 8 FMA chains, each widened row vector
/// used 4 times and each query vector twice. o[j * ldo + 0] = a . q_j, o[j * ldo + 1] = b . q_j.
template <typename T>
__attribute__((target("avx2,fma,f16c"))) inline void dot_2x4(const T* a, const T* b, int64_t E, const float* q, float* o,
                                                             int64_t ldo) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  for (int64_t e = 0; e < E; e += 8) {
    const __m256 x = widen(a + e), y = widen(b + e);
    __m256 v = _mm256_loadu_ps(q + e);
    a0 = _mm256_fmadd_ps(x, v, a0);
    b0 = _mm256_fmadd_ps(y, v, b0);
    v = _mm256_loadu_ps(q + E + e);
    a1 = _mm256_fmadd_ps(x, v, a1);
    b1 = _mm256_fmadd_ps(y, v, b1);
    v = _mm256_loadu_ps(q + 2 * E + e);
    a2 = _mm256_fmadd_ps(x, v, a2);
    b2 = _mm256_fmadd_ps(y, v, b2);
    v = _mm256_loadu_ps(q + 3 * E + e);
    a3 = _mm256_fmadd_ps(x, v, a3);
    b3 = _mm256_fmadd_ps(y, v, b3);
  }
  alignas(16) float sa[4], sb[4];
  _mm_store_ps(sa, hsum4(a0, a1, a2, a3));
  _mm_store_ps(sb, hsum4(b0, b1, b2, b3));
  for (int j = 0; j < 4; ++j) {
    o[j * ldo] = sa[j];
    o[j * ldo + 1] = sb[j];
  }
}

/// out[j * n + i] = rows[i] . queries[j] for n rows and nq queries (E a multiple of 16): queries
/// 4 at a time over rows 2 at a time, so the block of rows is read from cache nq / 4 times.
template <typename T>
__attribute__((target("avx2,fma,f16c"))) void dot_block_multi_avx2(const T* rows, int64_t n, int64_t E, const float* queries,
                                                                   int64_t nq, float* out) {
  int64_t j = 0;
  for (; j + 4 <= nq; j += 4) {
    int64_t i = 0;
    for (; i + 2 <= n; i += 2) dot_2x4(rows + i * E, rows + (i + 1) * E, E, queries + j * E, out + j * n + i, n);
    if (i < n) {  // an odd row: paired with itself, the second result dropped
      float o[8];
      dot_2x4(rows + i * E, rows + i * E, E, queries + j * E, o, 2);
      for (int c = 0; c < 4; ++c) out[(j + c) * n + i] = o[c * 2];
    }
  }
  for (; j < nq; ++j)
    for (int64_t i = 0; i < n; ++i) out[j * n + i] = dot_avx2(rows + i * E, E, queries + j * E);
}

#else
bool have_avx2() { return false; }
template <typename T, typename Q>
void dot_rows_avx2(const T* rows, int64_t n, int64_t E, const Q* q, float* out) {
  dot_rows_scalar(rows, n, E, q, out);
}
template <typename T>
void dot_block_multi_avx2(const T* rows, int64_t n, int64_t E, const float* queries, int64_t nq, float* out) {
  dot_block_multi_scalar(rows, n, E, queries, nq, out);
}
#endif


/// Scores of rows of T against a query of Q, with the AVX2 kernels when they apply.
template <typename T, typename Q>
struct Dot {
  const T* rows;
  int64_t E;
  bool vec;
  Dot(const T* rows_, int64_t E_) : rows(rows_), E(E_), vec(have_avx2() && E_ % 16 == 0) {}
  /// out[i] = rows[r + i] . q for i < n.
  void block(int64_t r, int64_t n, const Q* q, float* out) const {
    if (vec) dot_rows_avx2(rows + r * E, n, E, q, out);
    else dot_rows_scalar(rows + r * E, n, E, q, out);
  }
  /// out[j * n + i] = rows[r + i] . queries[j] for nq queries [nq, E] (float queries only).
  void block_multi(int64_t r, int64_t n, const float* queries, int64_t nq, float* out) const {
    if (vec) dot_block_multi_avx2(rows + r * E, n, E, queries, nq, out);
    else dot_block_multi_scalar(rows + r * E, n, E, queries, nq, out);
  }
};

/// Streams rows [0, N) once in blocks of `block` rows (threads take parts of at least `min_part`
/// rows). score(b, n, out) fills out[q * n + i] with row b + i's score for query q, reading the
/// rows under bus_guarded; the scores then go to each query's heap. Throws MappedRowsVanished if
/// the rows' pages vanish under it.
template <typename Score>
std::vector<std::vector<SearchHit>> scan_blocks(int64_t N, int64_t nq, int64_t k, int64_t block, int64_t min_part,
                                                Score score) {
  Results results(nq, k);
  std::atomic<bool> vanished{false};
  for_each_range(N, min_part, [&](int64_t begin, int64_t end) {
    std::vector<TopK> local(static_cast<size_t>(nq), TopK(k));
    std::vector<float> scores(static_cast<size_t>(block * nq));  // [Q, block]
    float* sp = scores.data();
    for (int64_t b = begin; b < end && !vanished; b += block) {
      const int64_t n = std::min(block, end - b);
      if (!bus_guarded([&] { score(b, n, sp); })) {
        vanished = true;
        break;
      }
      for (int64_t q = 0; q < nq; ++q)
        for (int64_t i = 0; i < n; ++i) local[q].push(sp[q * n + i], b + i);
    }
    results.absorb(local);
  });
  if (vanished) rows_vanished();
  return results.sorted();
}

/// One query (or a few) at a time over blocks of 128 rows, which stay in cache for the next
/// query; each score is multiplied by `scale(row, q)` (which may read mapped memory too).
template <typename T, typename Q, typename Scale>
std::vector<std::vector<SearchHit>> fused_scan(const Dot<T, Q>& dot, int64_t N, const std::vector<const Q*>& queries,
                                               int64_t k, Scale scale) {
  const int64_t nq = static_cast<int64_t>(queries.size());
  return scan_blocks(N, nq, k, 128, 16384, [&](int64_t b, int64_t n, float* out) {
    for (int64_t q = 0; q < nq; ++q) {
      dot.block(b, n, queries[q], out + q * n);
      for (int64_t i = 0; i < n; ++i) out[q * n + i] *= scale(b + i, q);
    }
  });
}

/// Several queries: blocks of 64 rows (64 KB of fp16, in L2 while every query passes over them)
/// scored against all of them by dot_block_multi (each row widened once per 4 queries, each
/// query vector used for 2 rows).
template <typename T>
std::vector<std::vector<SearchHit>> multi_scan(const Dot<T, float>& dot, int64_t N, const float* queries, int64_t nq,
                                               int64_t k) {
  return scan_blocks(N, nq, k, 64, 4096,
                     [&](int64_t b, int64_t n, float* out) { dot.block_multi(b, n, queries, nq, out); });
}

template <typename T>
std::vector<std::vector<SearchHit>> exact_scan(const T* rows, int64_t N, int64_t E, const at::Tensor& queries, int64_t k) {
  if (queries.size(0) >= kBlockedQueries) return multi_scan(Dot<T, float>(rows, E), N, queries.data_ptr<float>(), queries.size(0), k);
  std::vector<const float*> q;
  for (int64_t i = 0; i < queries.size(0); ++i) q.push_back(queries.data_ptr<float>() + i * E);
  return fused_scan(Dot<T, float>(rows, E), N, q, k, [](int64_t, int64_t) { return 1.0f; });
}

void check_shapes(const at::Tensor& rows, const at::Tensor& queries, int64_t k) {
  TORCH_CHECK(rows.dim() == 2 && queries.dim() == 2 && rows.size(1) == queries.size(1),
              "search: embeddings [N, E] and queries [Q, E] must share E; got ", rows.sizes(), " and ", queries.sizes());
  TORCH_CHECK(k > 0, "search: --k must be positive");
}

}  // namespace

std::vector<std::vector<SearchHit>> search_index(const at::Tensor& embeddings, const at::Tensor& queries, int64_t k) {
  check_shapes(embeddings, queries, k);
  const auto emb = embeddings.contiguous();
  const auto q = queries.to(at::kFloat).contiguous();  // [Q, E]
  const int64_t N = emb.size(0), E = emb.size(1);
  if (emb.scalar_type() == at::kHalf) return exact_scan(emb.data_ptr<c10::Half>(), N, E, q, k);
  TORCH_CHECK(emb.scalar_type() == at::kFloat, "search: embeddings must be fp16 or fp32");
  return exact_scan(emb.data_ptr<float>(), N, E, q, k);
}

Int8Rows quantize_rows(const at::Tensor& rows) {
  TORCH_CHECK(rows.dim() == 2, "quantize_rows: expected [N, E], got ", rows.sizes());
  const int64_t N = rows.size(0), E = rows.size(1);
  Int8Rows out{at::empty({N, E}, at::kChar), at::empty({N}, at::kFloat)};
  constexpr int64_t kChunk = 16384;  // float temporaries of a chunk, not of the whole matrix
  for (int64_t b = 0; b < N; b += kChunk) {
    const int64_t e = std::min(N, b + kChunk);
    const auto x = at::nan_to_num(rows.slice(0, b, e).to(at::kFloat), 0.0);  // [n, E]; NaN would not convert to int8
    const auto scales = x.abs().amax(1) / 127.0f;                           // [n]
    const auto safe = at::where(scales > 0, scales, at::ones_like(scales));  // a zero row divides by 1
    out.codes.slice(0, b, e).copy_((x / safe.unsqueeze(1)).round_().clamp_(-127, 127));
    out.scales.slice(0, b, e).copy_(scales);
  }
  return out;
}

std::vector<std::vector<SearchHit>> search_int8(const Int8Rows& q8, const at::Tensor& exact, const at::Tensor& queries,
                                                int64_t k, int64_t candidates) {
  check_shapes(exact, queries, k);
  const int64_t N = exact.size(0), E = exact.size(1), nq = queries.size(0);
  TORCH_CHECK(q8.codes.scalar_type() == at::kChar && q8.codes.sizes() == exact.sizes() && q8.scales.dim() == 1 &&
                  q8.scales.size(0) == N && q8.scales.scalar_type() == at::kFloat,
              "search: int8 codes ", q8.codes.sizes(), " and scales ", q8.scales.sizes(), " do not match the rows ",
              exact.sizes());
  TORCH_CHECK(exact.scalar_type() == at::kHalf || exact.scalar_type() == at::kFloat, "search: the rows to rerank must be fp16 or fp32");
  // A batch of queries is compute-bound, not bandwidth-bound: the int8 rows would save nothing.
  if (nq >= kBlockedQueries) return search_index(exact, queries, k);
  candidates = std::max(candidates, k);
  // Queries as int16 with a scale that keeps E * 127 * max|q16| below 2^31.
  const auto qf = queries.to(at::kFloat).contiguous();  // [Q, E]
  const double limit = std::min(32767.0, std::floor(2147483647.0 / (127.0 * static_cast<double>(E))));
  const auto qmax = qf.abs().amax(1).clamp_min(1e-30f);  // [Q]
  const auto q16 = (qf * (limit / qmax).unsqueeze(1)).round().to(at::kShort).contiguous();  // [Q, E]
  std::vector<float> qscale(static_cast<size_t>(nq));
  std::vector<const int16_t*> qp;
  for (int64_t i = 0; i < nq; ++i) {
    qscale[i] = static_cast<float>(qmax[i].item<float>() / limit);
    qp.push_back(q16.data_ptr<int16_t>() + i * E);
  }
  const auto codes = q8.codes.contiguous();
  const auto scales = q8.scales.contiguous();
  const float* rs = scales.data_ptr<float>();
  auto approx = fused_scan(Dot<int8_t, int16_t>(codes.data_ptr<int8_t>(), E), N, qp, std::min(candidates, N),
                           [&](int64_t row, int64_t q) { return rs[row] * qscale[q]; });
  // Exact scores of the candidates.
  const auto emb = exact.contiguous();
  std::vector<std::vector<SearchHit>> out(static_cast<size_t>(nq));
  for (int64_t q = 0; q < nq; ++q) {
    TopK best(k);
    const float* qv = qf.data_ptr<float>() + q * E;
    for (const auto& h : approx[q]) {
      float s = 0;
      const bool read = bus_guarded([&] {
        if (emb.scalar_type() == at::kHalf) Dot<c10::Half, float>(emb.data_ptr<c10::Half>(), E).block(h.row, 1, qv, &s);
        else Dot<float, float>(emb.data_ptr<float>(), E).block(h.row, 1, qv, &s);
      });
      if (!read) rows_vanished();
      best.push(s, h.row);
    }
    out[q] = best.sorted();
  }
  return out;
}

double recall_at_k(const std::vector<std::vector<int64_t>>& found, const std::vector<std::vector<int64_t>>& reference) {
  TORCH_CHECK(found.size() == reference.size() && !found.empty(), "recall_at_k: ", found.size(), " results for ",
              reference.size(), " queries");
  double sum = 0;
  for (size_t q = 0; q < found.size(); ++q) {
    const std::set<int64_t> want(reference[q].begin(), reference[q].end());
    int64_t hit = 0;
    for (int64_t r : found[q]) hit += static_cast<int64_t>(want.count(r));
    sum += want.empty() ? 1.0 : static_cast<double>(hit) / static_cast<double>(want.size());
  }
  return sum / static_cast<double>(found.size());
}

namespace {
volatile uint64_t g_sink = 0;
}  // namespace

StreamingRead::StreamingRead(int64_t bytes) : bytes_(std::max<int64_t>(bytes / 4096 * 4096, 4096)) {
  buffer_.reset(static_cast<uint64_t*>(std::aligned_alloc(4096, static_cast<size_t>(bytes_))));
  TORCH_CHECK(buffer_, "cannot allocate ", bytes_, " bytes to measure memory bandwidth");
  uint64_t* words = buffer_.get();
  for_each_range(bytes_ / 8, 1 << 16, [&](int64_t b, int64_t e) {  // touched by the threads that will read it
    for (int64_t i = b; i < e; ++i) words[i] = static_cast<uint64_t>(i);
  });
}

double StreamingRead::gbs() {
  const uint64_t* words = buffer_.get();
  std::atomic<uint64_t> sink{0};
  const auto t0 = std::chrono::steady_clock::now();
  for_each_range(bytes_ / 8, 1 << 16, [&](int64_t b, int64_t e) {
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;  // four independent chains: the loads, not the adds, set the pace
    int64_t i = b;
    for (; i + 4 <= e; i += 4) {
      s0 += words[i];
      s1 += words[i + 1];
      s2 += words[i + 2];
      s3 += words[i + 3];
    }
    for (; i < e; ++i) s0 += words[i];
    sink += s0 + s1 + s2 + s3;
  });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  g_sink = sink.load();  // keeps the reads
  return static_cast<double>(bytes_) / seconds / 1e9;
}

}  // namespace torchclip
