#include "data/image.h"

#include <fmt/format.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstring>
#include <vector>

namespace torchclip::data {
namespace {

uint32_t be32(const unsigned char* p) { return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3]; }
uint32_t be16(const unsigned char* p) { return (uint32_t(p[0]) << 8) | p[1]; }
uint32_t le16(const unsigned char* p) { return uint32_t(p[0]) | (uint32_t(p[1]) << 8); }
uint32_t le24(const unsigned char* p) { return le16(p) | (uint32_t(p[2]) << 16); }
uint32_t le32(const unsigned char* p) { return le24(p) | (uint32_t(p[3]) << 24); }

std::optional<ImageHeader> probe_jpeg(const unsigned char* p, size_t n) {
  size_t i = 2;
  while (i + 4 <= n) {
    if (p[i] != 0xFF) return std::nullopt;
    const unsigned char m = p[i + 1];
    if (m == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    if (m == 0xD8 || (m >= 0xD0 && m <= 0xD7) || m == 0x01) {  // markers without a length
      i += 2;
      continue;
    }
    const uint32_t len = be16(p + i + 2);
    const bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
    if (sof) {
      if (i + 9 > n) return std::nullopt;
      return ImageHeader{"jpeg", be16(p + i + 7), be16(p + i + 5)};
    }
    i += 2 + len;
  }
  return std::nullopt;
}

}  // namespace

std::optional<ImageHeader> probe_image(std::string_view bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  if (n >= 24 && std::memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0 && std::memcmp(p + 12, "IHDR", 4) == 0) {
    return ImageHeader{"png", be32(p + 16), be32(p + 20)};
  }
  if (n >= 4 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return probe_jpeg(p, n);
  if (n >= 30 && std::memcmp(p, "RIFF", 4) == 0 && std::memcmp(p + 8, "WEBP", 4) == 0) {
    if (std::memcmp(p + 12, "VP8 ", 4) == 0) return ImageHeader{"webp", le16(p + 26) & 0x3FFF, le16(p + 28) & 0x3FFF};
    if (std::memcmp(p + 12, "VP8L", 4) == 0) {
      const uint32_t bits = uint32_t(p[21]) | (uint32_t(p[22]) << 8) | (uint32_t(p[23]) << 16) | (uint32_t(p[24]) << 24);
      return ImageHeader{"webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1};
    }
    if (std::memcmp(p + 12, "VP8X", 4) == 0) return ImageHeader{"webp", le24(p + 24) + 1, le24(p + 27) + 1};
  }
  if (n >= 26 && p[0] == 'B' && p[1] == 'M') {  // BMP: a file header, then the DIB header's size and dimensions
    const uint32_t dib = le32(p + 14);
    if (dib == 12) return ImageHeader{"bmp", le16(p + 18), le16(p + 20)};  // OS/2 BITMAPCOREHEADER
    if (dib >= 40) {
      const auto height = static_cast<int32_t>(le32(p + 22));  // negative: rows stored top-down
      return ImageHeader{"bmp", le32(p + 18), static_cast<uint32_t>(height < 0 ? -static_cast<int64_t>(height) : height)};
    }
  }
  return std::nullopt;
}

cv::Mat decode_image(std::string_view bytes, int64_t max_pixels) {
  if (bytes.empty()) throw SampleError("image_empty", "the image file is empty (0 bytes)");
  auto header = probe_image(bytes);
  if (!header) {
    std::string start;
    for (char c : bytes.substr(0, 16)) start += (c >= 32 && c < 127) ? c : '.';
    throw SampleError("not_an_image", fmt::format("not a JPEG, PNG, WebP or BMP file (starts with \"{}\")", start));
  }
  if (header->width <= 0 || header->height <= 0 || header->width * header->height > max_pixels) {
    throw SampleError("image_too_large", fmt::format("{} header says {}x{} pixels; the limit is {} pixels",
                                                     header->format, header->width, header->height, max_pixels));
  }
  if (header->format == "jpeg") {
    // A complete JPEG ends with the EOI marker (possibly followed by padding).
    size_t end = bytes.size();
    while (end > 2 && (bytes[end - 1] == '\0' || bytes[end - 1] == '\n' || bytes[end - 1] == '\r')) --end;
    if (end < 2 || static_cast<unsigned char>(bytes[end - 2]) != 0xFF || static_cast<unsigned char>(bytes[end - 1]) != 0xD9)
      throw SampleError("image_truncated", "the JPEG data ends before its end-of-image marker");
  }
  cv::Mat raw;
  try {
    cv::Mat buf(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<char*>(bytes.data()));
    raw = cv::imdecode(buf, cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception& e) {
    throw SampleError("image_corrupt", fmt::format("{} decoding failed: {}", header->format, e.what()));
  }
  if (raw.empty()) {
    throw SampleError("image_corrupt",
                      fmt::format("{} data could not be decoded (corrupt or truncated)", header->format));
  }
  if (raw.depth() == CV_16U) raw.convertTo(raw, CV_8U, 1.0 / 257.0);
  if (raw.depth() != CV_8U) throw SampleError("image_corrupt", "unsupported sample depth");
  cv::Mat bgr;
  switch (raw.channels()) {
    case 1:
      cv::cvtColor(raw, bgr, cv::COLOR_GRAY2BGR);
      break;
    case 3:
      bgr = raw;
      break;
    case 4: {  // composite onto white: c = c*a + 255*(1-a)
      cv::Mat bgra_f;
      raw.convertTo(bgra_f, CV_32F, 1.0 / 255.0);
      std::vector<cv::Mat> ch;
      cv::split(bgra_f, ch);
      for (int k = 0; k < 3; ++k) ch[k] = ch[k].mul(ch[3]) + (1.0 - ch[3]);
      cv::Mat merged;
      cv::merge(std::vector<cv::Mat>{ch[0], ch[1], ch[2]}, merged);
      merged.convertTo(bgr, CV_8U, 255.0);
      break;
    }
    default:
      throw SampleError("image_corrupt", fmt::format("unsupported channel count {}", raw.channels()));
  }
  return bgr;
}

}  // namespace torchclip::data
