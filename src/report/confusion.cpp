#include "report/confusion.h"

#include "data/transform.h"
#include "io/fsutil.h"
#include "util/csv.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#if TORCHCLIP_HAVE_OPENCV
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

#include <algorithm>
#include <stdexcept>

namespace torchclip {

void write_confusion_csv(const ZeroShotReport& r, const std::vector<std::string>& classes, const std::string& path) {
  const auto& field = csv_field;
  std::string out = "true/predicted";
  for (const auto& c : classes) out += "," + field(c);
  out += "\n";
  const int64_t C = static_cast<int64_t>(classes.size());
  for (int64_t i = 0; i < C; ++i) {
    out += field(classes[i]);
    for (int64_t j = 0; j < C; ++j) out += fmt::format(",{}", r.confusion[i][j].item<int64_t>());
    out += "\n";
  }
  write_file_atomic(path, out);
}

void write_confusion_png(const ZeroShotReport& r, const std::vector<std::string>& classes, const std::string& path) {
  data::require_image_decoders("drawing the confusion heatmap (PNG)");
#if TORCHCLIP_HAVE_OPENCV
  const int C = static_cast<int>(classes.size());
    // Cells shrink with the class count (4 px for ImageNet's 1000); names need 12 px, counts 28.
  const int cell = std::max(4, std::min(56, 900 / std::max(1, C))), label_w = cell >= 12 ? 170 : 10,
            top = cell >= 12 ? 150 : 10;
  cv::Mat img(top + C * cell + 40, label_w + C * cell + 20, CV_8UC3, cv::Scalar(255, 255, 255));
  auto conf = r.confusion.to(at::kDouble);
  auto rows = conf.sum(1, true).clamp_min(1);
  auto share = (conf / rows).contiguous();  // [C, C] row-normalised
  const double* s = share.data_ptr<double>();
  const double font = cell >= 36 ? 0.4 : 0.3;
  for (int i = 0; i < C; ++i) {
    if (cell >= 12)
      cv::putText(img, classes[i].substr(0, 22), {6, top + i * cell + cell / 2 + 4}, cv::FONT_HERSHEY_SIMPLEX, 0.42,
                  {30, 30, 30}, 1, cv::LINE_AA);
    for (int j = 0; j < C; ++j) {
      const double v = s[i * C + j];
      const int shade = static_cast<int>(255 * (1 - v));
      cv::Rect box(label_w + j * cell, top + i * cell, cell - 1, cell - 1);
      cv::rectangle(img, box, cv::Scalar(255, shade, shade), cv::FILLED);  // white -> blue
      if (cell >= 28)
        cv::putText(img, fmt::format("{}", r.confusion[i][j].item<int64_t>()), {box.x + 3, box.y + cell / 2 + 4},
                    cv::FONT_HERSHEY_SIMPLEX, font, v > 0.5 ? cv::Scalar(255, 255, 255) : cv::Scalar(40, 40, 40), 1,
                    cv::LINE_AA);
    }
  }
  // Predicted class names, written vertically above the columns.
  for (int j = 0; j < C && cell >= 12; ++j) {
    cv::Mat label(std::min(20, cell), top - 10, CV_8UC3, cv::Scalar(255, 255, 255));
    cv::putText(label, classes[j].substr(0, 22), {2, std::min(14, cell - 3)}, cv::FONT_HERSHEY_SIMPLEX, 0.42, {30, 30, 30}, 1, cv::LINE_AA);
    cv::rotate(label, label, cv::ROTATE_90_COUNTERCLOCKWISE);
    const int x = label_w + j * cell + (cell - label.cols) / 2;
    label.copyTo(img(cv::Rect(x, 4, label.cols, label.rows)));
  }
  cv::putText(img, fmt::format("zero-shot confusion (rows: true class, columns: predicted), top-1 {:.2f}%", 100 * r.top1),
              {6, img.rows - 14}, cv::FONT_HERSHEY_SIMPLEX, 0.45, {30, 30, 30}, 1, cv::LINE_AA);
  if (!cv::imwrite(path, img)) throw std::runtime_error(fmt::format("{}: cannot write the heatmap PNG", path));
#endif
}

}  // namespace torchclip
