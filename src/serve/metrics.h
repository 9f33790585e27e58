// The server's counters and histograms, rendered in Prometheus' text exposition format
// (GET /metrics): requests and errors by route and status, request latency by route, the sizes
// of the batches the towers ran, the requests in flight and the process's resident memory.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace torchclip::serve {

/// A Prometheus histogram with fixed upper bounds (cumulative buckets, sum and count).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}
  void observe(double v);
  /// The `name`_bucket/_sum/_count lines, with `labels` ("route=\"/x\"" or empty) on each.
  std::string render(const std::string& name, const std::string& labels) const;
  int64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<int64_t> counts_;  // per bucket, not cumulative; the last is +Inf
  double sum_ = 0;
  int64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();
  /// One finished request: its route (one of the server's, or "other"), status and seconds.
  void request(const std::string& route, int status, double seconds);
  /// One call of a tower: "text" or "image", and how many inputs it embedded at once.
  void batch(const std::string& tower, int64_t size);
  std::atomic<int64_t> in_flight{0};
  /// The exposition text; `gauges` are extra name -> value lines (index rows, ...).
  std::string render(const std::vector<std::pair<std::string, double>>& gauges = {}) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, int64_t> requests_;  // (route, status) -> count
  std::map<std::string, Histogram> latency_;                 // route -> seconds
  std::map<std::string, Histogram> batches_;                 // tower -> inputs per call
};

/// The process's resident set size in bytes (/proc/self/statm), 0 where unavailable.
int64_t resident_memory_bytes();

}  // namespace torchclip::serve
