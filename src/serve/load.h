// `torchclip bench serve`: a load test of a running server. N clients (threads, one keep-alive
// connection each) send text searches for T seconds after a warm-up; the report has requests
// per second, latency percentiles, errors by status, and the server's resident memory (from its
// /metrics) after the warm-up and after the load, which must not grow.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace torchclip::serve {

struct LoadOptions {
  std::string url = "http://127.0.0.1:8080";  // http://HOST:PORT
  int clients = 8;
  double seconds = 10;
  double warmup_seconds = 2;
  int64_t k = 10;
  std::string api_key;
  std::vector<std::string> queries;  // sent round-robin; a built-in list when empty
  bool progress = true;
};

struct LoadReport {
  int clients = 0;
  double seconds = 0;
  int64_t requests = 0, errors = 0;
  double qps = 0, p50_ms = 0, p95_ms = 0, p99_ms = 0, max_ms = 0;
  int64_t rss_before = 0, rss_after = 0;  // the server's resident bytes after the warm-up and after the load
  double batch_mean = 0;                  // texts per text-tower call during the load (from /metrics)
  std::map<int, int64_t> statuses;        // HTTP status (0: no response) -> count
  std::string first_error;
  std::string to_json() const;
  std::string to_text() const;
};

/// Throws naming the URL when the server does not answer /health; every loop ends by the
/// deadline (each request has a 30 s timeout).
LoadReport run_load(const LoadOptions& options);

}  // namespace torchclip::serve
