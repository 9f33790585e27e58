// Image transforms as OpenCLIP's image_transform: RandomResizedCrop for training, resize of the
// shortest side plus centre crop for evaluation, then normalisation to a float tensor.
#pragma once

#include "config/enums.h"

#include <torch/arg.h>

#include <array>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace at {
class Tensor;
}
namespace cv {
class Mat;
}

namespace torchclip::data {

using Rgb = std::array<double, 3>;

struct ImageTransformOptions {
  TORCH_ARG(int64_t, image_size) = 224;
  /// OpenAI's CLIP statistics (OpenCLIP's OPENAI_DATASET_MEAN / _STD).
  TORCH_ARG(Rgb, mean) = {0.48145466, 0.4578275, 0.40821073};
  TORCH_ARG(Rgb, std) = {0.26862954, 0.26130258, 0.27577711};
  /// Training: RandomResizedCrop(scale, ratio); evaluation: resize + centre crop.
  TORCH_ARG(bool, train) = false;
  TORCH_ARG(double, scale_min) = 0.9;
  TORCH_ARG(double, scale_max) = 1.0;
  TORCH_ARG(double, ratio_min) = 3.0 / 4.0;
  TORCH_ARG(double, ratio_max) = 4.0 / 3.0;
  TORCH_ARG(ResizeMode, resize) = ResizeMode::kPil;
};

struct CropBox {
  int top, left, height, width;
};

/// 8-bit interleaved pixels, rows `step` bytes apart: a view, owning nothing. cv::Mat rows, a
/// mapped tensor file's [H, W, 3] images and Pixels all read through it.
struct PixelView {
  const uint8_t* data = nullptr;
  int rows = 0, cols = 0, channels = 0;
  int64_t step = 0;  // bytes from one row to the next
  const uint8_t* row(int y) const { return data + static_cast<int64_t>(y) * step; }
  PixelView crop(const CropBox& b) const {
    return {row(b.top) + static_cast<int64_t>(b.left) * channels, b.height, b.width, channels, step};
  }
};

/// Owned 8-bit interleaved pixels, rows packed.
struct Pixels {
  int rows = 0, cols = 0, channels = 0;
  std::vector<uint8_t> data;
  PixelView view() const { return {data.data(), rows, cols, channels, static_cast<int64_t>(cols) * channels}; }
};

/// Channel order of 3-channel pixels: OpenCV decodes to BGR, tensor files hold RGB.
enum class ChannelOrder { kRgb, kBgr };

/// torchvision's RandomResizedCrop.get_params: 10 tries at a random area and aspect ratio, then
/// a centre crop clamped to the ratio range.
CropBox random_resized_crop_box(int height, int width, const ImageTransformOptions& o, std::mt19937_64& rng);

/// Pillow's `Image.resize(size, Image.BICUBIC)` on 8-bit images of 1 to 4 channels: separable,
/// horizontal pass first, the cubic kernel with a = -0.5 widened by the shrink factor, weights
/// normalised and rounded to 22-bit fixed point, each pass rounded to uint8. Needs no OpenCV.
Pixels resize_pil_bicubic(const PixelView& src, int width, int height);

/// 3-channel pixels -> RGB [3, S, S] written into `out`, which must be that shape and either
/// float (normalised: (x / 255 - mean) / std) or uint8 (the resized pixels, for normalize_images
/// on the model's device). `rng` is used only when training. Resizing follows `o.resize()`;
/// `fast` needs OpenCV (an error naming TORCHCLIP_OPENCV in a build without it).
void transform_pixels(const PixelView& src, ChannelOrder order, const ImageTransformOptions& o, std::mt19937_64& rng,
                      at::Tensor& out);

/// uint8 RGB images [B, 3, S, S] on any device -> float [B, 3, S, S], (x / 255 - mean) / std,
/// computed there: the same values transform_pixels writes into a float `out`.
at::Tensor normalize_images(const at::Tensor& images, const Rgb& mean, const Rgb& std);

/// Whether this build decodes images (TORCHCLIP_OPENCV=ON); without it only tensor files and
/// already-decoded pixels can be read.
bool have_image_decoders();
/// Throws std::runtime_error saying `what` needs the image decoders of a TORCHCLIP_OPENCV=ON build.
void require_image_decoders(const std::string& what);

#if TORCHCLIP_HAVE_OPENCV
/// The same over cv::Mat (8-bit, 1 to 4 channels; BGR for transform_image, as decode_image returns).
PixelView pixel_view(const cv::Mat& m);
cv::Mat resize_pil_bicubic(const cv::Mat& src, int width, int height);
void transform_image(const cv::Mat& bgr, const ImageTransformOptions& o, std::mt19937_64& rng, at::Tensor& out);
#endif

}  // namespace torchclip::data
