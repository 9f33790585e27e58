#include "serve/load.h"

#include "util/json.h"
#include "util/progress.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace torchclip::serve {

namespace {

using Clock = std::chrono::steady_clock;

const std::vector<std::string> kQueries = {
    "a photo of a dog", "a red car parked on a street", "a bowl of fruit", "a person riding a bicycle",
    "a city skyline at night", "a cat sleeping on a sofa", "a plate of food", "a sandy beach with palm trees",
    "a black and white photo", "a close-up of a flower", "a pair of shoes", "a shirt", "a handbag", "a coat",
    "a dress", "a sneaker", "an ankle boot", "a pullover", "trousers", "a sandal"};

struct Target {
  std::string host;
  int port = 80;
};

Target parse_url(const std::string& url) {
  std::string rest = url;
  if (rest.rfind("http://", 0) == 0) rest = rest.substr(7);
  else if (rest.find("://") != std::string::npos)
    throw std::invalid_argument(fmt::format("--url '{}': only http:// is supported", url));
  if (const size_t slash = rest.find('/'); slash != std::string::npos) rest = rest.substr(0, slash);
  Target t;
  const size_t colon = rest.rfind(':');
  t.host = rest.substr(0, colon);
  if (colon != std::string::npos) {
    const std::string port = rest.substr(colon + 1);
    char* end = nullptr;
    const long p = std::strtol(port.c_str(), &end, 10);
    if (port.empty() || *end || p < 1 || p > 65535) throw std::invalid_argument(fmt::format("--url '{}': the port must be 1 to 65535", url));
    t.port = static_cast<int>(p);
  }
  if (t.host.empty()) throw std::invalid_argument(fmt::format("--url '{}': no host (http://HOST:PORT)", url));
  return t;
}

std::unique_ptr<httplib::Client> client(const Target& t, const std::string& key) {
  auto c = std::make_unique<httplib::Client>(t.host, t.port);
  c->set_connection_timeout(5);
  c->set_read_timeout(30);
  c->set_write_timeout(30);
  c->set_keep_alive(true);
  c->set_tcp_nodelay(true);
  if (!key.empty()) c->set_bearer_token_auth(key);
  return c;
}

/// The server's /metrics as text; throws naming the URL when it does not answer 200.
std::string metrics_text(const Target& t, const std::string& key, const std::string& url) {
  auto c = client(t, key);
  auto r = c->Get("/metrics");
  if (!r) throw std::runtime_error(fmt::format("{}: no answer to GET /metrics ({})", url, httplib::to_string(r.error())));
  if (r->status != 200) throw std::runtime_error(fmt::format("{}: GET /metrics answered {}: {}", url, r->status, r->body.substr(0, 200)));
  return r->body;
}

/// The value of the first exposition line starting with `series` ("name" or "name{labels}").
double series_value(const std::string& text, const std::string& series) {
  for (size_t p = text.find(series); p != std::string::npos; p = text.find(series, p + 1)) {
    if (p > 0 && text[p - 1] != '\n') continue;
    const size_t v = p + series.size();
    if (v < text.size() && text[v] == ' ') return std::strtod(text.c_str() + v + 1, nullptr);
  }
  return 0;
}

double percentile(std::vector<double> sorted_ms, double q) {
  if (sorted_ms.empty()) return 0;
  const size_t i = std::min(sorted_ms.size() - 1, static_cast<size_t>(q * static_cast<double>(sorted_ms.size() - 1) + 0.5));
  return sorted_ms[i];
}

}  // namespace

LoadReport run_load(const LoadOptions& o) {
  const Target target = parse_url(o.url);
  const auto& queries = o.queries.empty() ? kQueries : o.queries;
  {
    auto c = client(target, o.api_key);
    auto r = c->Get("/health");
    if (!r || r->status != 200)
      throw std::runtime_error(fmt::format("{}: the server does not answer GET /health ({})", o.url,
                                           r ? fmt::format("HTTP {}", r->status) : httplib::to_string(r.error())));
  }
  std::mutex mu;
  LoadReport report;
  report.clients = o.clients;
  std::vector<double> latencies;
  std::atomic<bool> measuring{false};
  std::atomic<int64_t> sent{0};

  auto phase = [&](double seconds, bool measure, Progress* progress) {
    measuring = measure;
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    std::vector<std::thread> threads;
    for (int c = 0; c < o.clients; ++c) {
      threads.emplace_back([&, c] {
        auto cli = client(target, o.api_key);
        std::vector<double> mine;
        std::map<int, int64_t> statuses;
        std::string first_error;
        for (size_t i = static_cast<size_t>(c); Clock::now() < deadline; i += static_cast<size_t>(o.clients)) {
          const std::string body = fmt::format("{{\"query\": {}, \"k\": {}}}", json_quote(queries[i % queries.size()]), o.k);
          const auto t0 = Clock::now();
          auto r = cli->Post("/v1/search", body, "application/json");
          const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
          const int status = r ? r->status : 0;
          ++statuses[status];
          if (status != 200 && first_error.empty())
            first_error = r ? fmt::format("HTTP {}: {}", status, r->body.substr(0, 300)) : httplib::to_string(r.error());
          mine.push_back(ms);
          if (measure) ++sent;
        }
        std::lock_guard<std::mutex> lock(mu);
        if (!measure) return;
        latencies.insert(latencies.end(), mine.begin(), mine.end());
        for (const auto& [s, n] : statuses) report.statuses[s] += n;
        if (report.first_error.empty()) report.first_error = first_error;
      });
    }
    if (progress) {
      int64_t shown = 0;
      while (Clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
        const int64_t now = sent.load();
        progress->advance(now - shown);
        shown = now;
      }
    }
    for (auto& t : threads) t.join();
  };

  if (o.warmup_seconds > 0) phase(o.warmup_seconds, false, nullptr);  // the allocator and caches settle
  const std::string m0 = metrics_text(target, o.api_key, o.url);
  report.rss_before = static_cast<int64_t>(series_value(m0, "process_resident_memory_bytes"));
  const double batches0 = series_value(m0, "torchclip_batch_size_count{tower=\"text\"}");
  const double texts0 = series_value(m0, "torchclip_batch_size_sum{tower=\"text\"}");
  const auto t0 = Clock::now();
  {
    std::unique_ptr<Progress> progress;
    if (o.progress) progress = std::make_unique<Progress>(fmt::format("load {} clients", o.clients), 0, "req");
    phase(o.seconds, true, progress.get());
    if (progress) progress->finish();
  }
  report.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  const std::string m1 = metrics_text(target, o.api_key, o.url);
  report.rss_after = static_cast<int64_t>(series_value(m1, "process_resident_memory_bytes"));
  const double calls = series_value(m1, "torchclip_batch_size_count{tower=\"text\"}") - batches0;
  if (calls > 0) report.batch_mean = (series_value(m1, "torchclip_batch_size_sum{tower=\"text\"}") - texts0) / calls;
  std::sort(latencies.begin(), latencies.end());
  report.requests = static_cast<int64_t>(latencies.size());
  for (const auto& [s, n] : report.statuses)
    if (s != 200) report.errors += n;
  report.qps = report.seconds > 0 ? static_cast<double>(report.requests) / report.seconds : 0;
  report.p50_ms = percentile(latencies, 0.50);
  report.p95_ms = percentile(latencies, 0.95);
  report.p99_ms = percentile(latencies, 0.99);
  report.max_ms = latencies.empty() ? 0 : latencies.back();
  return report;
}

std::string LoadReport::to_json() const {
  std::vector<std::string> s;
  for (const auto& [status, n] : statuses) s.push_back(fmt::format("\"{}\": {}", status, n));
  return fmt::format(
      "{{\"clients\": {}, \"seconds\": {:.3f}, \"requests\": {}, \"errors\": {}, \"qps\": {:.2f}, \"p50_ms\": {:.3f}, "
      "\"p95_ms\": {:.3f}, \"p99_ms\": {:.3f}, \"max_ms\": {:.3f}, \"text_batch_mean\": {:.3f}, \"server_rss_before\": {}, "
      "\"server_rss_after\": {}, \"server_rss_growth\": {:.4f}, \"statuses\": {{{}}}, \"first_error\": {}}}",
      clients, seconds, requests, errors, qps, p50_ms, p95_ms, p99_ms, max_ms, batch_mean, rss_before, rss_after,
      rss_before > 0 ? static_cast<double>(rss_after - rss_before) / static_cast<double>(rss_before) : 0.0, fmt::join(s, ", "),
      json_quote(first_error));
}

std::string LoadReport::to_text() const {
  return fmt::format(
      "{} clients for {:.1f} s: {} requests, {:.1f} req/s, errors {}\n"
      "latency ms: p50 {:.2f}  p95 {:.2f}  p99 {:.2f}  max {:.2f}\n"
      "texts per text-tower call: {:.2f} (concurrent queries batched)\n"
      "server memory: {:.1f} MiB after warm-up, {:.1f} MiB after the load ({:+.2f}%){}",
      clients, seconds, requests, qps, errors, p50_ms, p95_ms, p99_ms, max_ms, batch_mean, rss_before / 1048576.0,
      rss_after / 1048576.0, rss_before > 0 ? 100.0 * static_cast<double>(rss_after - rss_before) / static_cast<double>(rss_before) : 0.0,
      first_error.empty() ? "" : "\nfirst error: " + first_error);
}

}  // namespace torchclip::serve
