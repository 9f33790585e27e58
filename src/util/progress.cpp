#include "util/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

namespace torchclip {

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  if (s < 60) return fmt::format("{:.1f}s", s);
  auto t = static_cast<int64_t>(s);
  if (t < 3600) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}h{:02d}m", t / 3600, (t % 3600) / 60);
}

Progress::Progress(std::string label, int64_t total, std::string unit, std::FILE* out)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), out_(out),
      tty_(isatty(fileno(out)) != 0), start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::advance(int64_t n, const std::string& extra) {
  done_ += n;
  auto now = std::chrono::steady_clock::now();
  // Terminals redraw up to 10 times a second; logs get a line every 10 s.
  double since = std::chrono::duration<double>(now - last_draw_).count();
  if (since >= (tty_ ? 0.1 : 10.0) || (tty_ && total_ > 0 && done_ >= total_)) {
    last_draw_ = now;
    draw(false, extra);
  }
}

void Progress::finish(const std::string& extra) { draw(true, extra); }

void Progress::draw(bool final, const std::string& extra) {
  const double t = elapsed_seconds();
  const double rate = t > 0 ? done_ / t : 0.0;
  std::string line;
  if (total_ > 0) {
    const double frac = std::min(1.0, static_cast<double>(done_) / total_);
    const int width = 24, filled = static_cast<int>(frac * width);
    std::string bar = std::string(filled, '#') + std::string(width - filled, '.');
    const double eta = rate > 0 ? (total_ - done_) / rate : NAN;
    line = fmt::format("{} [{}] {}/{} {:.2f} {}/s elapsed {} eta {}", label_, bar, done_, total_, rate, unit_,
                       format_duration(t), final ? "0s" : format_duration(eta));
  } else {
    line = fmt::format("{} {} {} {:.2f} {}/s elapsed {}", label_, done_, unit_, rate, unit_, format_duration(t));
  }
  if (!extra.empty()) line += "  " + extra;
  if (tty_) {
    fmt::print(out_, "\r\033[K{}{}", line, final ? "\n" : "");
  } else {
    fmt::print(out_, "{}\n", line);
  }
  std::fflush(out_);
}

}  // namespace torchclip
