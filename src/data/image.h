// Image bytes -> RGB pixels through OpenCV, defensively: the size is read from the header before
// any decoding (decompression bombs are refused), truncated and mislabelled files are detected,
// and every failure is a SampleError with a short reason the loader counts by.
#pragma once

#include <opencv2/core/mat.hpp>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace torchclip::data {

/// A sample that cannot be used. `reason` is a short stable key ("image_truncated", ...);
/// what() says what happened.
class SampleError : public std::runtime_error {
 public:
  SampleError(std::string reason, const std::string& what) : std::runtime_error(what), reason(std::move(reason)) {}
  std::string reason;
};

struct ImageHeader {
  std::string format;  // "jpeg", "png", "webp"
  int64_t width = 0, height = 0;
};

/// Reads format and size from the first bytes; nullopt when the bytes are no JPEG, PNG or WebP.
std::optional<ImageHeader> probe_image(std::string_view bytes);

/// Decodes to 8-bit BGR (CV_8UC3, OpenCV's channel order: the transform reorders while it
/// normalises, so no separate conversion pass is spent). Grey and palette images are expanded,
/// alpha is composited onto white, 16-bit images are scaled to 8 bits. Throws SampleError with reason image_empty,
/// not_an_image, image_too_large, image_truncated or image_corrupt.
cv::Mat decode_image(std::string_view bytes, int64_t max_pixels = 89478485);

}  // namespace torchclip::data
