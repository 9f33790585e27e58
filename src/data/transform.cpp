#include "data/transform.h"

#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>

#include <cmath>

namespace torchclip::data {

CropBox random_resized_crop_box(int H, int W, const ImageTransformOptions& o, std::mt19937_64& rng) {
  const double area = static_cast<double>(H) * W;
  std::uniform_real_distribution<double> scale(o.scale_min(), o.scale_max());
  std::uniform_real_distribution<double> log_ratio(std::log(o.ratio_min()), std::log(o.ratio_max()));
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * scale(rng), aspect = std::exp(log_ratio(rng));
    const int w = static_cast<int>(std::nearbyint(std::sqrt(target * aspect)));
    const int h = static_cast<int>(std::nearbyint(std::sqrt(target / aspect)));
    if (w > 0 && h > 0 && w <= W && h <= H) {
      const int top = std::uniform_int_distribution<int>(0, H - h)(rng);
      const int left = std::uniform_int_distribution<int>(0, W - w)(rng);
      return {top, left, h, w};
    }
  }
  const double in_ratio = static_cast<double>(W) / H;
  int w = W, h = H;
  if (in_ratio < o.ratio_min()) {
    h = static_cast<int>(std::nearbyint(W / o.ratio_min()));
  } else if (in_ratio > o.ratio_max()) {
    w = static_cast<int>(std::nearbyint(H * o.ratio_max()));
  }
  return {(H - h) / 2, (W - w) / 2, h, w};
}

namespace {

cv::Mat resize(const cv::Mat& src, int width, int height) {
  cv::Mat dst;
  const bool shrink = width < src.cols || height < src.rows;
  cv::resize(src, dst, cv::Size(width, height), 0, 0, shrink ? cv::INTER_AREA : cv::INTER_CUBIC);
  return dst;
}

}  // namespace

void transform_image(const cv::Mat& rgb, const ImageTransformOptions& o, std::mt19937_64& rng, at::Tensor& out) {
  const int S = static_cast<int>(o.image_size());
  cv::Mat square;
  if (o.train()) {
    CropBox b = random_resized_crop_box(rgb.rows, rgb.cols, o, rng);
    square = resize(rgb(cv::Rect(b.left, b.top, b.width, b.height)), S, S);
  } else {
    // Resize so the shorter side is S (torchvision Resize(S)), then centre-crop S x S.
    const bool portrait = rgb.rows > rgb.cols;
    const int short_side = portrait ? rgb.cols : rgb.rows, long_side = portrait ? rgb.rows : rgb.cols;
    const int new_long = static_cast<int>(static_cast<int64_t>(S) * long_side / short_side);
    cv::Mat resized = portrait ? resize(rgb, S, new_long) : resize(rgb, new_long, S);
    // Python's round() (half to even), as torchvision's center_crop.
    const int top = static_cast<int>(std::nearbyint((resized.rows - S) / 2.0));
    const int left = static_cast<int>(std::nearbyint((resized.cols - S) / 2.0));
    square = resized(cv::Rect(left, top, S, S));
  }
  // HWC uint8 -> CHW float, (x / 255 - mean) / std.
  float* dst = out.data_ptr<float>();
  float scale[3], shift[3];
  for (int c = 0; c < 3; ++c) {
    scale[c] = static_cast<float>(1.0 / (255.0 * o.std()[c]));
    shift[c] = static_cast<float>(-o.mean()[c] / o.std()[c]);
  }
  const int64_t plane = static_cast<int64_t>(S) * S;
  for (int y = 0; y < S; ++y) {
    const unsigned char* row = square.ptr<unsigned char>(y);
    for (int x = 0; x < S; ++x) {
      for (int c = 0; c < 3; ++c) dst[c * plane + y * S + x] = row[3 * x + c] * scale[c] + shift[c];
    }
  }
}

}  // namespace torchclip::data
