// A progress bar with rate and ETA on a terminal; plain periodic log lines elsewhere.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace torchclip {

class Progress {
 public:
  /// `total` units of work (0: unknown); `unit` names them ("step", "img").
  Progress(std::string label, int64_t total, std::string unit, std::FILE* out = stderr);
  /// Marks `n` more units done; `extra` is appended (e.g. "loss 0.31").
  void advance(int64_t n = 1, const std::string& extra = "");
  /// Final line with the totals.
  void finish(const std::string& extra = "");
  double elapsed_seconds() const;

 private:
  void draw(bool final, const std::string& extra);
  std::string label_, unit_;
  int64_t total_, done_ = 0;
  std::FILE* out_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

/// "1h02m", "3m07s", "12.3s".
std::string format_duration(double seconds);

}  // namespace torchclip
