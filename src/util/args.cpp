#include "util/args.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace torchclip {

Args::Args(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0 || a.size() == 2) {
      positional_.push_back(a);
      continue;
    }
    auto eq = a.find('=');
    if (eq != std::string::npos) {
      values_.emplace(a.substr(2, eq - 2), a.substr(eq + 1));
    } else if (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) {
      values_.emplace(a.substr(2), args[++i]);
    } else {
      flags_.insert(a.substr(2));
    }
  }
}

/// A single-valued flag given more than once is a usage error, not "the first one wins".
void Args::single(const std::string& name) const {
  const size_t n = values_.count(name) + flags_.count(name);
  if (n > 1) throw UsageError(fmt::format("--{} is given {} times; it takes one value", name, n));
}

std::string Args::get(const std::string& name, const std::string& fallback) {
  known_.insert(name);
  single(name);
  auto it = values_.find(name);
  if (it == values_.end()) {
    if (flags_.count(name)) throw UsageError(fmt::format("--{} needs a value", name));
    return fallback;
  }
  return it->second;
}

std::string Args::require(const std::string& name) {
  known_.insert(name);
  single(name);
  auto it = values_.find(name);
  if (it == values_.end()) {
    if (flags_.count(name)) throw UsageError(fmt::format("--{} needs a value", name));
    throw UsageError(fmt::format("--{} is required", name));
  }
  return it->second;
}

namespace {

template <typename T>
T parse_number(const std::string& name, const std::string& v, const char* what) {
  try {
    size_t used = 0;
    T x;
    if constexpr (std::is_integral_v<T>) x = std::stoll(v, &used); else x = std::stod(v, &used);
    if (used == v.size()) return x;
  } catch (const std::exception&) {
  }
  throw UsageError(fmt::format("--{} expects {}, got '{}'", name, what, v));
}

}  // namespace

int64_t Args::get_int(const std::string& name, int64_t fallback) {
  std::string v = get(name, "");
  return v.empty() ? fallback : parse_number<int64_t>(name, v, "an integer");
}

int64_t Args::get_int(const std::string& name, int64_t fallback, int64_t lo, int64_t hi) {
  const int64_t v = get_int(name, fallback);
  if (v < lo || v > hi) throw UsageError(fmt::format("--{} {} is outside [{}, {}]", name, v, lo, hi));
  return v;
}

std::vector<int64_t> Args::get_int_list(const std::string& name, const std::vector<int64_t>& fallback, int64_t lo, int64_t hi) {
  const std::string v = get(name, "");
  if (v.empty()) return fallback;
  std::vector<int64_t> out;
  for (size_t start = 0;;) {
    const size_t comma = v.find(',', start);
    const std::string item = v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const auto x = parse_number<int64_t>(name, item, "a comma-separated list of integers");
    if (x < lo || x > hi) throw UsageError(fmt::format("--{}: {} is outside [{}, {}]", name, x, lo, hi));
    out.push_back(x);
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

double Args::get_double(const std::string& name, double fallback) {
  std::string v = get(name, "");
  return v.empty() ? fallback : parse_number<double>(name, v, "a number");
}

bool Args::flag(const std::string& name) {
  known_.insert(name);
  if (values_.count(name)) throw UsageError(fmt::format("--{} takes no value", name));
  return flags_.count(name) > 0;
}

std::vector<std::string> Args::get_all(const std::string& name) {
  known_.insert(name);
  // "--query" with nothing after it must not fall back to what an empty list means (stdin).
  if (flags_.count(name)) throw UsageError(fmt::format("--{} needs a value", name));
  std::vector<std::string> out;
  auto range = values_.equal_range(name);
  for (auto it = range.first; it != range.second; ++it) out.push_back(it->second);
  return out;
}

void Args::finish() const {
  auto check = [&](const std::string& name) {
    if (!known_.count(name))
      throw UsageError(fmt::format("unknown flag --{}; known flags: --{}", name, fmt::join(known_, ", --")));
  };
  for (const auto& kv : values_) check(kv.first);
  for (const auto& f : flags_) check(f);
}

}  // namespace torchclip
