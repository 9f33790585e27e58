#include "report/contact_sheet.h"

#include "data/transform.h"
#include <fmt/format.h>
#if TORCHCLIP_HAVE_OPENCV
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

#include <stdexcept>

namespace torchclip {

void write_contact_sheet(const std::vector<std::string>& paths, const std::vector<float>& scores, const std::string& title,
                         const std::string& png) {
  data::require_image_decoders("drawing a contact sheet (PNG)");
#if TORCHCLIP_HAVE_OPENCV
  const int tile = 112, cols = std::min<int>(8, std::max<int>(1, static_cast<int>(paths.size())));
  const int rows = (static_cast<int>(paths.size()) + cols - 1) / cols;
  cv::Mat sheet(40 + rows * (tile + 22), cols * (tile + 8) + 8, CV_8UC3, cv::Scalar(255, 255, 255));
  cv::putText(sheet, title, {8, 26}, cv::FONT_HERSHEY_SIMPLEX, 0.6, {20, 20, 20}, 1, cv::LINE_AA);
  for (size_t i = 0; i < paths.size(); ++i) {
    const int x = 8 + static_cast<int>(i % cols) * (tile + 8), y = 40 + static_cast<int>(i / cols) * (tile + 22);
    cv::Mat img = cv::imread(paths[i], cv::IMREAD_COLOR);
    if (!img.empty()) {
      cv::resize(img, img, {tile, tile}, 0, 0, img.cols < tile ? cv::INTER_NEAREST : cv::INTER_AREA);
      img.copyTo(sheet(cv::Rect(x, y, tile, tile)));
    }
    cv::putText(sheet, fmt::format("#{} {:.3f}", i + 1, scores[i]), {x, y + tile + 15}, cv::FONT_HERSHEY_SIMPLEX, 0.42,
                {60, 60, 60}, 1, cv::LINE_AA);
  }
  if (!cv::imwrite(png, sheet)) throw std::runtime_error(fmt::format("{}: cannot write the contact sheet", png));
#endif
}

}  // namespace torchclip
