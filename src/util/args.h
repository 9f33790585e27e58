// Command-line flags for the thin programs under tools/: `--name value`, `--name=value`, and
// boolean `--flag`. Unknown flags are errors that list the known ones.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace torchclip {

class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Args {
 public:
  /// `args` excludes the program and subcommand names.
  explicit Args(const std::vector<std::string>& args);

  std::string get(const std::string& name, const std::string& fallback);
  std::string require(const std::string& name);
  int64_t get_int(const std::string& name, int64_t fallback);
  /// The same, refused with a usage error naming the flag and the range outside [lo, hi]: every
  /// count flag has one (a batch of 0 or a million processes must not get as far as a loop).
  int64_t get_int(const std::string& name, int64_t fallback, int64_t lo, int64_t hi);
  double get_double(const std::string& name, double fallback);
  /// A comma-separated list of integers, each in [lo, hi] (`--batches 1,16,256`).
  std::vector<int64_t> get_int_list(const std::string& name, const std::vector<int64_t>& fallback, int64_t lo, int64_t hi);
  /// A boolean flag: present or not.
  bool flag(const std::string& name);
  /// All values of a repeatable flag (`--set a=1 --set b=2`).
  std::vector<std::string> get_all(const std::string& name);
  const std::vector<std::string>& positional() const { return positional_; }
  /// Throws UsageError for any flag that no call above asked about.
  void finish() const;

 private:
  void single(const std::string& name) const;
  std::multimap<std::string, std::string> values_;
  std::set<std::string> flags_;
  std::set<std::string> known_;
  std::vector<std::string> positional_;
};

}  // namespace torchclip
