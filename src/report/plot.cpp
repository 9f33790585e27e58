#include "report/plot.h"

#include "data/transform.h"
#include "util/json.h"

#include <fmt/format.h>
#if TORCHCLIP_HAVE_OPENCV
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <stdexcept>
#include <vector>

namespace torchclip {
namespace {

using Series = std::vector<std::pair<double, double>>;

bool number(const std::string& line, const std::string& key, double& out) {
  const auto v = json_find_number(line, key);
  if (v) out = *v;
  return v.has_value();
}

#if TORCHCLIP_HAVE_OPENCV
void panel(cv::Mat& img, cv::Rect area, const std::string& title, const std::vector<std::pair<std::string, Series>>& series,
           bool log_y) {
  static const cv::Scalar colours[] = {{180, 90, 30}, {40, 120, 220}, {60, 160, 60}, {160, 60, 160}};
  cv::rectangle(img, area, cv::Scalar(200, 200, 200));
  cv::putText(img, title, {area.x + 8, area.y + 20}, cv::FONT_HERSHEY_SIMPLEX, 0.55, {30, 30, 30}, 1, cv::LINE_AA);
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  auto ty = [&](double y) { return log_y ? std::log10(std::max(y, 1e-12)) : y; };
  for (const auto& [name, s] : series)
    for (const auto& [x, y] : s) x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, ty(y)), y1 = std::max(y1, ty(y));
  if (x0 > x1) return;
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + 1e-6, y0 -= 1e-6;
  const cv::Rect plot(area.x + 60, area.y + 30, area.width - 75, area.height - 55);
  auto px = [&](double x, double y) {
    return cv::Point(plot.x + static_cast<int>((x - x0) / (x1 - x0) * plot.width),
                     plot.y + plot.height - static_cast<int>((ty(y) - y0) / (y1 - y0) * plot.height));
  };
  for (int k = 0; k <= 4; ++k) {  // y ticks
    const double v = y0 + (y1 - y0) * k / 4;
    const int yy = plot.y + plot.height - plot.height * k / 4;
    cv::line(img, {plot.x, yy}, {plot.x + plot.width, yy}, {235, 235, 235});
    cv::putText(img, fmt::format("{:.3g}", log_y ? std::pow(10.0, v) : v), {area.x + 4, yy + 4}, cv::FONT_HERSHEY_SIMPLEX,
                0.35, {80, 80, 80}, 1, cv::LINE_AA);
  }
  cv::putText(img, fmt::format("step {:.0f}", x0), {plot.x, plot.y + plot.height + 16}, cv::FONT_HERSHEY_SIMPLEX, 0.35,
              {80, 80, 80}, 1, cv::LINE_AA);
  cv::putText(img, fmt::format("{:.0f}", x1), {plot.x + plot.width - 30, plot.y + plot.height + 16}, cv::FONT_HERSHEY_SIMPLEX,
              0.35, {80, 80, 80}, 1, cv::LINE_AA);
  int legend = 0;
  for (size_t i = 0; i < series.size(); ++i) {
    const auto& s = series[i].second;
    const cv::Scalar c = colours[i % 4];
    for (size_t k = 1; k < s.size(); ++k) cv::line(img, px(s[k - 1].first, s[k - 1].second), px(s[k].first, s[k].second), c, 1, cv::LINE_AA);
    if (s.size() <= 20)
      for (const auto& [x, y] : s) cv::circle(img, px(x, y), 3, c, cv::FILLED, cv::LINE_AA);
    cv::putText(img, series[i].first, {plot.x + plot.width - 170, plot.y + 14 + 16 * legend++}, cv::FONT_HERSHEY_SIMPLEX,
                0.4, c, 1, cv::LINE_AA);
  }
}
#endif

}  // namespace

void plot_metrics(const std::string& jsonl, const std::string& png) {
  data::require_image_decoders("drawing plot.png");
#if TORCHCLIP_HAVE_OPENCV
  std::ifstream in(jsonl);
  if (!in) throw std::runtime_error(fmt::format("{}: cannot open the metrics file", jsonl));
  Series loss, smooth, lr;
  std::map<std::string, Series> evals;
  double ema = NAN;
  for (std::string line; std::getline(in, line);) {
    double step = 0, v = 0;
    if (!number(line, "step", step)) continue;
    if (line.find("\"eval\"") != std::string::npos) {
      for (const char* k : {"zeroshot_top1", "zeroshot_top5", "image_to_text_R@1", "text_to_image_R@1"})
        if (number(line, k, v)) evals[k].emplace_back(step, v);
      continue;
    }
    if (number(line, "loss", v)) {
      loss.emplace_back(step, v);
      ema = std::isnan(ema) ? v : 0.95 * ema + 0.05 * v;
      smooth.emplace_back(step, ema);
    }
    if (number(line, "lr", v)) lr.emplace_back(step, v);
  }
  cv::Mat img(900, 900, CV_8UC3, cv::Scalar(255, 255, 255));
  panel(img, {10, 10, 880, 290}, "training loss", {{"loss", loss}, {"smoothed", smooth}}, true);
  panel(img, {10, 305, 880, 290}, "learning rate", {{"lr", lr}}, false);
  std::vector<std::pair<std::string, Series>> ev(evals.begin(), evals.end());
  panel(img, {10, 600, 880, 290}, "evaluation", ev, false);
  if (!cv::imwrite(png, img)) throw std::runtime_error(fmt::format("{}: cannot write the plot", png));
#endif
}

}  // namespace torchclip
