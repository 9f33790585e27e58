// RUN/metrics.jsonl: one JSON object per line (training steps, evaluations, skipped steps),
// appended and flushed line by line so a crash loses at most the line being written.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>

namespace torchclip {

class MetricsLog {
 public:
  /// Opens `path` for appending. With `keep_until_step` >= 0 (a resumed run) only the lines of
  /// steps up to it are kept, since the run redoes the later ones, and a partial last line (a
  /// crash mid-write) is dropped; with -1 the file starts empty. Throws naming the file.
  MetricsLog(std::string path, int64_t keep_until_step);
  /// Appends one line (a JSON object without the newline) and flushes it.
  void write(const std::string& json_object);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

}  // namespace torchclip
