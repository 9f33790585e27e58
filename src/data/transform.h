// Image transforms as OpenCLIP's image_transform: RandomResizedCrop for training, resize of the
// shortest side plus centre crop for evaluation, then normalisation to a float tensor.
#pragma once

#include "config/enums.h"

#include <torch/arg.h>

#include <array>
#include <cstdint>
#include <random>
#include <string>

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

/// torchvision's RandomResizedCrop.get_params: 10 tries at a random area and aspect ratio, then
/// a centre crop clamped to the ratio range.
CropBox random_resized_crop_box(int height, int width, const ImageTransformOptions& o, std::mt19937_64& rng);

/// BGR uint8 [H, W, 3] (as decode_image returns) -> normalised RGB float [3, S, S] written into
/// `out` (which must be that shape).
/// `rng` is used only when training. Resizing follows `o.resize()`.
/// Pillow's `Image.resize(size, Image.BICUBIC)` on 8-bit images of 1 to 4 channels: separable,
/// horizontal pass first, the cubic kernel with a = -0.5 widened by the shrink factor, weights
/// normalised and rounded to 22-bit fixed point, each pass rounded to uint8.
cv::Mat resize_pil_bicubic(const cv::Mat& src, int width, int height);

void transform_image(const cv::Mat& bgr, const ImageTransformOptions& o, std::mt19937_64& rng, at::Tensor& out);

}  // namespace torchclip::data
