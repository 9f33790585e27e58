#include "serve/metrics.h"

#include <fmt/format.h>

#include <cstdio>
#include <unistd.h>

namespace torchclip::serve {

namespace {

const std::vector<double> kLatencyBounds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
const std::vector<double> kBatchBounds = {1, 2, 4, 8, 16, 32, 64, 128, 256};

std::string number(double v) { return fmt::format("{}", v); }  // shortest exact form: 0.005, 1e-05, 12

}  // namespace

void Histogram::observe(double v) {
  size_t b = 0;
  while (b < bounds_.size() && v > bounds_[b]) ++b;
  ++counts_[b];
  sum_ += v;
  ++count_;
}

std::string Histogram::render(const std::string& name, const std::string& labels) const {
  const std::string sep = labels.empty() ? "" : ",";
  std::string out;
  int64_t cumulative = 0;
  for (size_t b = 0; b <= bounds_.size(); ++b) {
    cumulative += counts_[b];
    out += fmt::format("{}_bucket{{{}{}le=\"{}\"}} {}\n", name, labels, sep, b < bounds_.size() ? number(bounds_[b]) : "+Inf",
                       cumulative);
  }
  const std::string braces = labels.empty() ? "" : "{" + labels + "}";
  out += fmt::format("{}_sum{} {}\n{}_count{} {}\n", name, braces, number(sum_), name, braces, count_);
  return out;
}

Metrics::Metrics() = default;

void Metrics::request(const std::string& route, int status, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{route, status}];
  latency_.try_emplace(route, kLatencyBounds).first->second.observe(seconds);
}

void Metrics::batch(const std::string& tower, int64_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  batches_.try_emplace(tower, kBatchBounds).first->second.observe(static_cast<double>(size));
}

std::string Metrics::render(const std::vector<std::pair<std::string, double>>& gauges) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out =
      "# HELP torchclip_requests_total HTTP requests by route and status code.\n"
      "# TYPE torchclip_requests_total counter\n";
  std::map<std::string, int64_t> errors;
  for (const auto& [key, n] : requests_) {
    out += fmt::format("torchclip_requests_total{{route=\"{}\",code=\"{}\"}} {}\n", key.first, key.second, n);
    if (key.second >= 400) errors[key.first] += n;
  }
  out +=
      "# HELP torchclip_request_errors_total Requests answered with a 4xx or 5xx status, by route.\n"
      "# TYPE torchclip_request_errors_total counter\n";
  for (const auto& [route, n] : errors) out += fmt::format("torchclip_request_errors_total{{route=\"{}\"}} {}\n", route, n);
  out +=
      "# HELP torchclip_request_duration_seconds Time from the request's arrival to its response, by route.\n"
      "# TYPE torchclip_request_duration_seconds histogram\n";
  for (const auto& [route, h] : latency_) out += h.render("torchclip_request_duration_seconds", fmt::format("route=\"{}\"", route));
  out +=
      "# HELP torchclip_batch_size Inputs per tower call: concurrent requests embedded together.\n"
      "# TYPE torchclip_batch_size histogram\n";
  for (const auto& [tower, h] : batches_) out += h.render("torchclip_batch_size", fmt::format("tower=\"{}\"", tower));
  out += fmt::format(
      "# HELP torchclip_requests_in_flight Requests being handled now.\n# TYPE torchclip_requests_in_flight gauge\n"
      "torchclip_requests_in_flight {}\n",
      in_flight.load());
  out += fmt::format(
      "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\n"
      "process_resident_memory_bytes {}\n",
      resident_memory_bytes());
  for (const auto& [name, v] : gauges) out += fmt::format("# TYPE {} gauge\n{} {}\n", name, name, number(v));
  return out;
}

int64_t resident_memory_bytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  long long size = 0, resident = 0;
  const int n = std::fscanf(f, "%lld %lld", &size, &resident);
  std::fclose(f);
  return n == 2 ? resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE)) : 0;
}

}  // namespace torchclip::serve
