#include "bench/bench_search.h"

#include "io/fsutil.h"
#include "search/index.h"
#include "util/json.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <vector>

namespace torchclip {

BenchSearchResult bench_search(const BenchSearchOptions& o) {
  TORCH_CHECK(o.rows() > 0 && o.dim() > 0 && o.k() > 0 && o.queries() > 0 && o.batch() > 0,
              "bench search: --rows, --dim, --k, --queries and --batch must be positive");
  TORCH_CHECK(o.dtype() == "fp16" || o.dtype() == "fp32", "bench search: --dtype must be fp16 or fp32");
  BenchSearchResult r;
  r.options = o;
  at::manual_seed(0);
  auto emb = at::randn({o.rows(), o.dim()});
  emb = (emb / emb.norm(2, 1, true)).to(o.dtype() == "fp16" ? at::kHalf : at::kFloat);  // [N, E]
  auto q = at::randn({o.queries(), o.dim()});
  q = q / q.norm(2, 1, true);  // [Q, E]
  using Clock = std::chrono::steady_clock;
  search_index(emb, q.slice(0, 0, 1), o.k());  // warm-up: touch every page once
  std::vector<double> single;
  for (int64_t i = 0; i < o.queries(); ++i) {
    auto t0 = Clock::now();
    search_index(emb, q.slice(0, i, i + 1), o.k());
    single.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::sort(single.begin(), single.end());
  r.ms_per_query = single[single.size() / 2];
  std::vector<double> batched;
  for (int rep = 0; rep < 3; ++rep) {
    auto qb = q.slice(0, 0, std::min(o.batch(), o.queries()));
    auto t0 = Clock::now();
    search_index(emb, qb, o.k());
    batched.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count() / qb.size(0));
  }
  std::sort(batched.begin(), batched.end());
  r.ms_per_query_batched = batched[batched.size() / 2];
  // Exactness on a few queries against float64 scores of the stored (rounded) embeddings.
  auto check = q.slice(0, 0, std::min<int64_t>(3, o.queries()));
  auto ours = search_index(emb, check, o.k());
  auto ref = std::get<1>(at::matmul(emb.to(at::kDouble), check.to(at::kDouble).t()).topk(o.k(), 0));  // [k, 3]
  r.exact = true;
  for (int64_t j = 0; j < check.size(0); ++j)
    for (int64_t i = 0; i < o.k(); ++i) r.exact = r.exact && ours[j][i].row == ref[i][j].item<int64_t>();
  if (o.compare()) {
    const std::string cmd = fmt::format("{} {}/scripts/bench_torch_search.py --rows {} --dim {} --k {} --queries {} --dtype {} "
                                        "--threads {} 2>&1",
                                        o.python(), TORCHCLIP_SOURCE_DIR, o.rows(), o.dim(), o.k(), o.queries(), o.dtype(),
                                        at::get_num_threads());
    int status = 0;
    const std::string out = run_command(cmd, status);
    const size_t brace = out.rfind("{\"ms_per_query\"");
    if (status != 0 || brace == std::string::npos) r.note = fmt::format("PyTorch did not run (exit {}): {}", status, out.substr(0, 300));
    else r.torch_ms_per_query = json_number(out.substr(brace), "ms_per_query");
  }
  return r;
}

std::string BenchSearchResult::to_json() const {
  return fmt::format("{{\"rows\": {}, \"dim\": {}, \"dtype\": \"{}\", \"k\": {}, \"threads\": {}, \"ms_per_query\": {:.3f}, "
                     "\"ms_per_query_batched\": {:.3f}, \"batch\": {}, \"torch_ms_per_query\": {:.3f}, \"speedup_vs_torch\": {:.3f}, "
                     "\"exact\": {}, \"note\": {}}}",
                     options.rows(), options.dim(), options.dtype(), options.k(), at::get_num_threads(), ms_per_query,
                     ms_per_query_batched, options.batch(), torch_ms_per_query,
                     torch_ms_per_query > 0 ? torch_ms_per_query / ms_per_query : 0.0, exact ? "true" : "false", json_quote(note));
}

std::string BenchSearchResult::to_text() const {
  std::string s = fmt::format(
      "search, {} x {} {} index, top-{}, {} threads\n"
      "  torchclip         {:>8.2f} ms per query (median of {}), {:.2f} ms per query in batches of {}\n"
      "  exact top-k       {}\n",
      options.rows(), options.dim(), options.dtype(), options.k(), at::get_num_threads(), ms_per_query, options.queries(),
      ms_per_query_batched, options.batch(), exact ? "yes (equals float64 matmul + topk)" : "NO");
  if (torch_ms_per_query > 0)
    s += fmt::format("  PyTorch (Python) {:>8.2f} ms per query (matmul + topk)\n  ratio             {:>8.2f}x\n", torch_ms_per_query,
                     torch_ms_per_query / ms_per_query);
  else if (!note.empty())
    s += "  PyTorch not measured: " + note + "\n";
  return s;
}

}  // namespace torchclip
