// Image bytes -> RGB pixels through OpenCV, defensively: the size is read from the header before
// any decoding (decompression bombs are refused), truncated and mislabelled files are detected,
// and every failure is a SampleError with a short reason the loader counts by.
#pragma once

#include "data/source.h"

#include <opencv2/core/mat.hpp>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace torchclip::data {

struct ImageHeader {
  std::string format;  // "jpeg", "png", "webp", "bmp"
  int64_t width = 0, height = 0;
};

/// Reads format and size from the first bytes; nullopt when the bytes are no JPEG, PNG, WebP or BMP.
std::optional<ImageHeader> probe_image(std::string_view bytes);

/// Decodes to 8-bit BGR (CV_8UC3, OpenCV's channel order: the transform reorders while it
/// normalises, so no separate conversion pass is spent). Grey and palette images are expanded,
/// alpha is composited onto white, 16-bit images are scaled to 8 bits. Throws SampleError with reason image_empty,
/// not_an_image, image_too_large, image_truncated or image_corrupt.
cv::Mat decode_image(std::string_view bytes, int64_t max_pixels = 89478485);

}  // namespace torchclip::data
