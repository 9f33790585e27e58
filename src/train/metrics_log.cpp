#include "train/metrics_log.h"

#include "io/fsutil.h"
#include "util/json.h"

#include <fmt/format.h>

#include <stdexcept>

namespace torchclip {

MetricsLog::MetricsLog(std::string path, int64_t keep_until_step) : path_(std::move(path)) {
  std::string kept;
  if (keep_until_step >= 0) {
    std::ifstream in(path_);
    for (std::string line; std::getline(in, line);) {
      if (in.eof()) break;  // no newline after it: a partial line from a crash
      const auto step = json_find_number(line, "step");
      if (!step || *step > static_cast<double>(keep_until_step)) continue;
      kept += line + "\n";
    }
  }
  write_file_atomic(path_, kept);
  out_.open(path_, std::ios::app);
  if (!out_) throw std::runtime_error(fmt::format("{}: cannot open the metrics file for appending", path_));
}

void MetricsLog::write(const std::string& json_object) {
  out_ << json_object << '\n' << std::flush;
  if (!out_) throw std::runtime_error(fmt::format("{}: cannot append to the metrics file (disk full?)", path_));
}

}  // namespace torchclip
