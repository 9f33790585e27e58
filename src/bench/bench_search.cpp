#include "bench/bench_search.h"

#include "bench/stats.h"
#include "io/fsutil.h"
#include "search/ann.h"
#include "search/scan.h"
#include "util/json.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <unistd.h>
#include <set>
#include <vector>

namespace torchclip {

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

std::vector<int64_t> rows_of(const std::vector<SearchHit>& hits) {
  std::vector<int64_t> r;
  for (const auto& h : hits) r.push_back(h.row);
  return r;
}

std::vector<std::vector<int64_t>> rows_of_all(const std::vector<std::vector<SearchHit>>& hits) {
  std::vector<std::vector<int64_t>> r;
  for (const auto& h : hits) r.push_back(rows_of(h));
  return r;
}

/// Row indices of the exact top k of each query in float64 [Q][k], best first, from rows in
/// chunks (the whole matrix in float64 would be 4x the index).
std::vector<std::vector<int64_t>> float64_top_k(const at::Tensor& rows, const at::Tensor& queries, int64_t k) {
  const auto q = queries.to(at::kDouble).t();  // [E, Q]
  std::vector<at::Tensor> parts;
  for (int64_t b = 0; b < rows.size(0); b += 65536)
    parts.push_back(at::matmul(rows.slice(0, b, std::min(rows.size(0), b + 65536)).to(at::kDouble), q));  // [n, Q]
  const auto top = std::get<1>(at::cat(parts).topk(k, 0)).t().contiguous();                               // [Q, k]
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(top.size(0)));
  for (int64_t i = 0; i < top.size(0); ++i) out[i].assign(top[i].data_ptr<int64_t>(), top[i].data_ptr<int64_t>() + k);
  return out;
}

}  // namespace

BenchSearchResult bench_search(const BenchSearchOptions& o) {
  TORCH_CHECK(o.rows() > 0 && o.dim() > 0 && o.k() > 0 && o.queries() > 0 && o.candidates() > 0 && !o.batches().empty(),
              "bench search: --rows, --dim, --k, --queries, --candidates and --batches must be positive");
  TORCH_CHECK(o.dtype() == "fp16" || o.dtype() == "fp32", "bench search: --dtype must be fp16 or fp32");
  BenchSearchResult r;
  r.options = o;
  const int64_t N = o.rows(), E = o.dim(), k = o.k();
  const int64_t nq = std::max(o.queries(), *std::max_element(o.batches().begin(), o.batches().end()));
  at::manual_seed(0);
  auto exact32 = at::randn({N, E});
  exact32 /= exact32.norm(2, 1, true);  // [N, E] the true embeddings
  auto q = at::randn({nq, E});
  q /= q.norm(2, 1, true);  // [nq, E]
  const auto sample = q.slice(0, 0, o.queries());
  const auto reference = rows_of_all(search_index(exact32, sample, k));
  at::Tensor rows = o.dtype() == "fp16" ? exact32.to(at::kHalf) : exact32;  // [N, E] as stored
  exact32 = at::Tensor();

  // Each single query is timed right after one pass of a streaming read, so the two see the same
  // load on a shared machine; the share of bandwidth is the median of the pairs' ratios.
  StreamingRead stream;
  search_index(rows, q.slice(0, 0, 1), k);  // warm-up: touch every page once
  std::vector<double> single, bandwidth, share;
  std::vector<std::vector<int64_t>> found;
  const double bytes = static_cast<double>(rows.nbytes());
  for (int64_t i = 0; i < o.queries(); ++i) {
    bandwidth.push_back(stream.gbs());
    const auto t0 = Clock::now();
    auto hits = search_index(rows, q.slice(0, i, i + 1), k);
    single.push_back(ms_since(t0));
    share.push_back(bytes / (single.back() * 1e6) / bandwidth.back());
    found.push_back(rows_of(hits[0]));
  }
  r.bandwidth_gbs = median_of(bandwidth);
  r.scan_share = median_of(share);
  r.fp16_recall = recall_at_k(found, reference);
  const double single_ms = median_of(single);
  r.scan_gbs = bytes / (single_ms * 1e6);
  for (int64_t b : o.batches()) {
    BenchSearchBatch x{b, single_ms, 0};
    if (b > 1) {
      std::vector<double> t;
      for (int rep = 0; rep < 3; ++rep) {
        const auto t0 = Clock::now();
        search_index(rows, q.slice(0, 0, b), k);
        t.push_back(ms_since(t0) / static_cast<double>(b));
      }
      x.ms_per_query = median_of(t);
    }
    r.batches.push_back(x);
  }
  // Exactness on a few queries against float64 scores of the stored (rounded) embeddings.
  // Three single queries (the streaming scan) and kBlockedQueries + 1 at once (the blocked kernel).
  const auto check = q.slice(0, 0, std::min<int64_t>(3, nq));
  const auto check_blocked = q.slice(0, 0, std::min<int64_t>(kBlockedQueries + 1, nq));
  r.exact = rows_of_all(search_index(rows, check, k)) == float64_top_k(rows, check, k) &&
            rows_of_all(search_index(rows, check_blocked, k)) == float64_top_k(rows, check_blocked, k);

  {  // int8 rows with an exact rerank of `candidates` rows per query
    const Int8Rows q8 = quantize_rows(rows);
    search_int8(q8, rows, q.slice(0, 0, 1), k, o.candidates());  // warm-up
    std::vector<double> t;
    std::vector<std::vector<int64_t>> found8;
    for (int64_t i = 0; i < o.queries(); ++i) {
      const auto t0 = Clock::now();
      auto hits = search_int8(q8, rows, q.slice(0, i, i + 1), k, o.candidates());
      t.push_back(ms_since(t0));
      found8.push_back(rows_of(hits[0]));
    }
    r.int8_ms_per_query = median_of(t);
    r.int8_recall = recall_at_k(found8, reference);
    r.int8_scan_gbs = static_cast<double>(q8.codes.nbytes() + q8.scales.nbytes()) / (r.int8_ms_per_query * 1e6);
  }
  rows = at::Tensor();  // PyTorch's copy gets the memory

  if (o.compare()) {
    const std::string cmd = fmt::format("{} {}/scripts/bench_torch_search.py --rows {} --dim {} --k {} --queries {} --dtype {} "
                                        "--batches {} --threads {} 2>&1",
                                        o.python(), TORCHCLIP_SOURCE_DIR, N, E, k, o.queries(), o.dtype(),
                                        fmt::join(o.batches(), ","), at::get_num_threads());
    int status = 0;
    const std::string out = run_command(cmd, status);
    const size_t brace = out.rfind("{\"torch\"");
    if (status != 0 || brace == std::string::npos) {
      r.note = fmt::format("PyTorch did not run (exit {}): {}", status, out.substr(0, 300));
    } else {
      for (auto& b : r.batches) b.torch_ms_per_query = json_number(out.substr(brace), fmt::format("ms_b{}", b.batch));
    }
  }
  return r;
}

std::string BenchSearchResult::to_json() const {
  std::vector<std::string> b;
  for (const auto& x : batches)
    b.push_back(fmt::format("{{\"batch\": {}, \"ms_per_query\": {:.4f}, \"torch_ms_per_query\": {:.4f}, \"speedup_vs_torch\": {:.3f}}}",
                            x.batch, x.ms_per_query, x.torch_ms_per_query,
                            x.torch_ms_per_query > 0 ? x.torch_ms_per_query / x.ms_per_query : 0.0));
  return fmt::format(
      "{{\"rows\": {}, \"dim\": {}, \"dtype\": \"{}\", \"k\": {}, \"threads\": {}, \"bandwidth_gbs\": {:.2f}, \"scan_gbs\": {:.2f}, "
      "\"scan_share_of_bandwidth\": {:.3f}, \"ms_per_query\": {:.4f}, \"recall\": {:.4f}, \"batches\": [{}], "
      "\"int8\": {{\"candidates\": {}, \"ms_per_query\": {:.4f}, \"recall\": {:.4f}, \"scan_gbs\": {:.2f}}}, \"exact\": {}, "
      "\"note\": {}}}",
      options.rows(), options.dim(), options.dtype(), options.k(), at::get_num_threads(), bandwidth_gbs, scan_gbs,
      scan_share, ms_per_query(), fp16_recall, fmt::join(b, ", "), options.candidates(), int8_ms_per_query,
      int8_recall, int8_scan_gbs, exact ? "true" : "false", json_quote(note));
}

std::string BenchSearchResult::to_text() const {
  std::string s = fmt::format(
      "search, {} x {} {} index, top-{}, {} threads\n"
      "  memory read bandwidth  {:>7.2f} GB/s (streaming read, all threads; median of passes between the queries)\n"
      "  single-query scan      {:>7.2f} GB/s, {:.0f}% of the bandwidth (median of per-query ratios)\n"
      "  exact top-k            {}; recall@{} against fp32 rows {:.4f}\n"
      "  batch   torchclip ms/query   PyTorch ms/query   ratio\n",
      options.rows(), options.dim(), options.dtype(), options.k(), at::get_num_threads(), bandwidth_gbs, scan_gbs,
      100 * scan_share, exact ? "yes (equals float64 matmul + topk)" : "NO", options.k(), fp16_recall);
  for (const auto& x : batches)
    s += fmt::format("  {:>5}   {:>18.3f}   {:>16}   {}\n", x.batch, x.ms_per_query,
                     x.torch_ms_per_query > 0 ? fmt::format("{:.3f}", x.torch_ms_per_query) : "-",
                     x.torch_ms_per_query > 0 ? fmt::format("{:.2f}x", x.torch_ms_per_query / x.ms_per_query) : "-");
  s += fmt::format("  int8 rows + exact {} rerank of {} candidates: {:.3f} ms/query ({:.2f} GB/s), recall@{} {:.4f}\n", options.dtype(),
                   options.candidates(), int8_ms_per_query, int8_scan_gbs, options.k(), int8_recall);
  if (!note.empty()) s += "  PyTorch not measured: " + note + "\n";
  return s;
}

BenchAnnResult bench_ann(const BenchAnnOptions& o) {
  TORCH_CHECK(o.rows() > 0 && o.dim() > 0 && o.k() > 0 && o.queries() > 0, "bench search: sizes must be positive");
  BenchAnnResult r;
  r.options = o;
  const int64_t N = o.rows(), E = o.dim(), k = o.k(), C = o.clusters() > 0 ? o.clusters() : std::max<int64_t>(1, N / 500);
  // Rows around C random centres: cos(row, its centre) ~0.7, as images of one concept are; the
  // queries are drawn around the same centres, as captions fall near the images they describe.
  const auto t0 = Clock::now();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
  const auto centres = at::randn({C, E}, gen) / std::sqrt(static_cast<double>(E));  // |c| ~ 1
  auto draw = [&](int64_t n) {  // [n, E] unit rows
    auto x = centres.index_select(0, at::randint(C, {n}, gen)) + at::randn({n, E}, gen) / std::sqrt(static_cast<double>(E));
    return x / x.norm(2, 1, true);
  };
  auto rows = at::empty({N, E}, at::kHalf);  // as an index stores them, generated in chunks
  for (int64_t lo = 0; lo < N; lo += 262144) {
    const int64_t hi = std::min(N, lo + 262144);
    rows.slice(0, lo, hi).copy_(draw(hi - lo));
  }
  const auto q = draw(o.queries());  // [Q, E]
  r.data_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  // The reference: the exact scan of the same rows, one query at a time (timed too).
  std::vector<double> exact_t;
  std::vector<std::vector<int64_t>> reference;
  search_index(rows, q.slice(0, 0, 1), k);  // warm-up: every page touched
  for (int64_t i = 0; i < o.queries(); ++i) {
    const auto e0 = Clock::now();
    reference.push_back(rows_of(search_index(rows, q.slice(0, i, i + 1), k)[0]));
    exact_t.push_back(ms_since(e0));
  }
  r.exact_ms = median_of(exact_t);
  const auto b0 = Clock::now();
  auto ann = AnnIndex::build(rows, o.ann());
  r.build_seconds = std::chrono::duration<double>(Clock::now() - b0).count();
  r.info = ann.info();
  {  // the bytes of FAISS's own format, as saved
    const std::string tmp = (std::filesystem::temp_directory_path() / fmt::format("torchclip_bench_{}.faiss", getpid())).string();
    r.bytes = ann.save(tmp);
    std::remove(tmp.c_str());
  }
  for (const auto& setting : o.searches()) {
    ann.search(q.slice(0, 0, 1), k, setting, rows);  // warm-up
    std::vector<double> t;
    std::vector<std::vector<int64_t>> found;
    for (int64_t i = 0; i < o.queries(); ++i) {
      const auto s0 = Clock::now();
      auto hits = ann.search(q.slice(0, i, i + 1), k, setting, rows);
      t.push_back(ms_since(s0));
      found.push_back(rows_of(hits[0]));
    }
    std::sort(t.begin(), t.end());
    BenchAnnPoint p{setting};
    p.p50_ms = t[t.size() / 2];
    p.p99_ms = t[std::min(t.size() - 1, static_cast<size_t>(0.99 * static_cast<double>(t.size())))];
    p.recall = recall_at_k(found, reference);
    r.points.push_back(p);
  }
  return r;
}

std::string BenchAnnResult::to_json() const {
  std::vector<std::string> i, p;
  for (const auto& [key, v] : info) i.push_back(fmt::format("{}: {}", json_quote(key), json_quote(v)));
  for (const auto& x : points)
    p.push_back(fmt::format("{{\"nprobe\": {}, \"ef_search\": {}, \"candidates\": {}, \"p50_ms\": {:.4f}, \"p99_ms\": {:.4f}, "
                            "\"recall\": {:.4f}, \"speedup_vs_exact_scan\": {:.2f}}}",
                            x.search.nprobe(), x.search.ef_search(), x.search.candidates(), x.p50_ms, x.p99_ms, x.recall,
                            x.p50_ms > 0 ? exact_ms / x.p50_ms : 0.0));
  return fmt::format(
      "{{\"rows\": {}, \"dim\": {}, \"k\": {}, \"queries\": {}, \"threads\": {}, \"index\": {{{}}}, \"build_seconds\": {:.2f}, "
      "\"bytes\": {}, \"bytes_per_row\": {:.2f}, \"exact_scan_ms\": {:.4f}, \"searches\": [{}]}}",
      options.rows(), options.dim(), options.k(), options.queries(), at::get_num_threads(), fmt::join(i, ", "), build_seconds, bytes,
      static_cast<double>(bytes) / static_cast<double>(options.rows()), exact_ms, fmt::join(p, ", "));
}

std::string BenchAnnResult::to_text() const {
  std::string params;
  for (const char* key : {"nlist", "nprobe", "pq_m", "hnsw_m", "train_rows"})
    if (info.count(key)) params += fmt::format(" {}={}", key, info.at(key));
  std::string s = fmt::format(
      "FAISS {} over {} x {} synthetic clustered rows (fp16), top-{}, {} threads;{}\n"
      "  build (train + add)   {:.1f} s\n"
      "  size                  {:.1f} MB ({:.1f} bytes per row; the fp16 rows: {:.0f})\n"
      "  exact fp16 scan       {:.3f} ms per query (the recall reference)\n"
      "  nprobe  ef_search  candidates   p50 ms   p99 ms   recall@{}   vs exact scan\n",
      info.count("type") ? info.at("type") : "?", options.rows(), options.dim(), options.k(), at::get_num_threads(), params,
      build_seconds, bytes / 1e6, static_cast<double>(bytes) / static_cast<double>(options.rows()), 2.0 * options.dim(), exact_ms,
      options.k());
  auto shown = [](int64_t v) { return v > 0 ? std::to_string(v) : std::string("default"); };
  for (const auto& x : points)
    s += fmt::format("  {:>6}  {:>9}  {:>10}  {:>7.3f}  {:>7.3f}   {:>9.4f}   {:.1f}x\n", shown(x.search.nprobe()), shown(x.search.ef_search()),
                     x.search.candidates(), x.p50_ms, x.p99_ms, x.recall, x.p50_ms > 0 ? exact_ms / x.p50_ms : 0.0);
  return s;
}

}  // namespace torchclip
