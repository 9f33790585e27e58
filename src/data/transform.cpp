#include "data/transform.h"

#include <ATen/ATen.h>
#if TORCHCLIP_HAVE_OPENCV
#include <opencv2/imgproc.hpp>
#endif

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <utility>
#include <vector>

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

/// Fixed-point weights: 32 bits minus 8 for the pixel and 2 of headroom for the sum, as Pillow.
constexpr int kPrecisionBits = 32 - 8 - 2;

/// Keys' cubic convolution kernel with a = -0.5 (Pillow's and Catmull-Rom's bicubic).
double cubic(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

/// For each output position along one axis: the first input index, the number of taps, and
/// `ksize` fixed-point weights.
struct Taps {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> weights;  // [out, ksize]
};

Taps bicubic_taps(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);  // widen the kernel when shrinking (antialias)
  const double support = 2.0 * filter_scale;
  Taps t;
  t.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.weights.assign(static_cast<size_t>(out_size) * t.ksize, 0);
  std::vector<double> k(t.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    // C casts truncate towards zero; Pillow relies on that before clamping.
    const int lo = std::max(static_cast<int>(center - support + 0.5), 0);
    const int n = std::min(static_cast<int>(center + support + 0.5), in_size) - lo;
    double total = 0;
    const double inv = 1.0 / filter_scale;  // multiplied, not divided: the same rounding as Pillow
    for (int x = 0; x < n; ++x) {
      k[x] = cubic((x + lo - center + 0.5) * inv);
      total += k[x];
    }
    for (int x = 0; x < n; ++x) {
      const double w = (total != 0.0 ? k[x] / total : k[x]) * (1 << kPrecisionBits);
      t.weights[static_cast<size_t>(xx) * t.ksize + x] = static_cast<int32_t>(w < 0 ? std::trunc(w - 0.5) : std::trunc(w + 0.5));
    }
    t.first[xx] = lo;
    t.count[xx] = n;
  }
  return t;
}

// Both passes run as the same row kernel: a vertical pass sums whole input rows into an int32
// accumulator row, and a horizontal pass is a vertical pass over the transposed image (then
// transposed back). Integer sums do not depend on their order, so the bytes are Pillow's; what
// changes is that every inner loop is a contiguous multiply-add the compiler vectorises (AVX2
// where the CPU has it), instead of a 3-channel gather per output pixel.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TORCHCLIP_ROW_KERNEL __attribute__((target_clones("avx2", "default")))
#else
#define TORCHCLIP_ROW_KERNEL
#endif

/// acc[i] += in[i] * w for i < n.
TORCHCLIP_ROW_KERNEL void accumulate_row(int32_t* __restrict acc, const uint8_t* __restrict in, int32_t w, int n) {
  for (int i = 0; i < n; ++i) acc[i] += static_cast<int32_t>(in[i]) * w;
}

/// out[i] = acc[i] >> the fixed-point bits, clamped to [0, 255] (floor, as Pillow), for i < n.
TORCHCLIP_ROW_KERNEL void finish_row(const int32_t* __restrict acc, uint8_t* __restrict out, int n) {
  for (int i = 0; i < n; ++i) {
    const int32_t v = acc[i] >> kPrecisionBits;  // arithmetic shift: floor, as Pillow
    out[i] = static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
  }
}

/// The vertical pass: output row yy is the weighted sum of input rows first[yy] ... (taps t).
Pixels vertical_pass(const PixelView& src, int out_rows) {
  const Taps t = bicubic_taps(src.rows, out_rows);
  Pixels dst;
  dst.rows = out_rows;
  dst.cols = src.cols;
  dst.channels = src.channels;
  const int row = src.cols * src.channels;
  dst.data.resize(static_cast<size_t>(out_rows) * row);
  std::vector<int32_t> acc(row);
  const int32_t half = 1 << (kPrecisionBits - 1);
  for (int yy = 0; yy < out_rows; ++yy) {
    const int32_t* w = &t.weights[static_cast<size_t>(yy) * t.ksize];
    std::fill(acc.begin(), acc.end(), half);
    for (int y = 0; y < t.count[yy]; ++y) accumulate_row(acc.data(), src.row(t.first[yy] + y), w[y], row);
    finish_row(acc.data(), dst.data.data() + static_cast<size_t>(yy) * row, row);
  }
  return dst;
}

/// Pixels with rows and columns exchanged (each pixel's channels stay together), in tiles.
Pixels transpose(const PixelView& src) {
  Pixels dst;
  dst.rows = src.cols;
  dst.cols = src.rows;
  dst.channels = src.channels;
  const int C = src.channels;
  dst.data.resize(static_cast<size_t>(dst.rows) * dst.cols * C);
  constexpr int kTile = 32;
  for (int y0 = 0; y0 < src.rows; y0 += kTile) {
    for (int x0 = 0; x0 < src.cols; x0 += kTile) {
      const int y1 = std::min(src.rows, y0 + kTile), x1 = std::min(src.cols, x0 + kTile);
      for (int y = y0; y < y1; ++y) {
        const uint8_t* in = src.row(y);
        for (int x = x0; x < x1; ++x) {
          uint8_t* out = dst.data.data() + (static_cast<size_t>(x) * dst.cols + y) * C;
          for (int c = 0; c < C; ++c) out[c] = in[x * C + c];
        }
      }
    }
  }
  return dst;
}

/// One resampling pass along x (horizontal) or y (vertical) of an 8-bit image with C channels.
Pixels resample_pass(const PixelView& src, int out_size, bool horizontal) {
  if (!horizontal) return vertical_pass(src, out_size);
  return transpose(vertical_pass(transpose(src).view(), out_size).view());
}

/// A copy with packed rows (what a resize that changes nothing returns).
Pixels copy_pixels(const PixelView& src) {
  Pixels p;
  p.rows = src.rows;
  p.cols = src.cols;
  p.channels = src.channels;
  const size_t row = static_cast<size_t>(src.cols) * src.channels;
  p.data.resize(row * src.rows);
  for (int y = 0; y < src.rows; ++y) std::memcpy(p.data.data() + y * row, src.row(y), row);
  return p;
}

#if TORCHCLIP_HAVE_OPENCV
/// OpenCV resize: shrinking by k >= 2 (k the rounded smaller factor) runs as a bilinear
/// resize to k times the target, which then shrinks by at most ~1.7x, followed by an exact k x k
/// box average: 3x faster than OpenCV's general area interpolation for the same smoothing.
/// Enlarging, or shrinking by less than 1.5x, uses bicubic or area interpolation directly.
cv::Mat resize_fast(const cv::Mat& src, int width, int height) {
  cv::Mat dst;
  const double fx = static_cast<double>(src.cols) / width, fy = static_cast<double>(src.rows) / height;
  const int k = static_cast<int>(std::floor(std::min(fx, fy) + 0.5));
  if (k >= 2) {
    cv::Mat mid;
    cv::resize(src, mid, cv::Size(width * k, height * k), 0, 0, cv::INTER_LINEAR);
    cv::resize(mid, dst, cv::Size(width, height), 0, 0, cv::INTER_AREA);
  } else {
    const bool shrink = fx > 1 || fy > 1;
    cv::resize(src, dst, cv::Size(width, height), 0, 0, shrink ? cv::INTER_AREA : cv::INTER_CUBIC);
  }
  return dst;
}
#endif

/// The pixels resized to width x height, by `mode`.
Pixels resize(const PixelView& src, int width, int height, ResizeMode mode) {
  if (mode == ResizeMode::kPil) return resize_pil_bicubic(src, width, height);
#if TORCHCLIP_HAVE_OPENCV
  const cv::Mat in(src.rows, src.cols, CV_8UC(src.channels), const_cast<uint8_t*>(src.data), static_cast<size_t>(src.step));
  const cv::Mat out = resize_fast(in, width, height);
  return copy_pixels(pixel_view(out));
#else
  require_image_decoders("data.resize: fast (OpenCV's resize)");
  return {};
#endif
}

/// (x / 255 - mean) / std as x * a + b for channel c: the one pair of constants both the
/// workers' table and normalize_images use.
std::pair<float, float> normalize_coefficients(const Rgb& mean, const Rgb& std, int64_t c) {
  return {static_cast<float>(1.0 / (255.0 * std[c])), static_cast<float>(-mean[c] / std[c])};
}

/// RGB CHW planes from interleaved S x S pixels: through a per-channel table into float, or
/// copied as uint8.
void write_planes(const PixelView& square, ChannelOrder order, const ImageTransformOptions& o, at::Tensor& out) {
  const int S = square.rows;
  TORCH_CHECK(square.channels == 3 && square.cols == S, "transform: expects 3-channel square pixels, got ", square.cols,
              "x", square.rows, "x", square.channels);
  TORCH_CHECK(out.is_contiguous() && (out.scalar_type() == at::kFloat || out.scalar_type() == at::kByte) &&
                  out.numel() == 3 * static_cast<int64_t>(S) * S,
              "transform: out must be a contiguous float or uint8 tensor [3, ", S, ", ", S, "]");
  const int64_t plane = static_cast<int64_t>(S) * S;
  // Each output plane c reads channel src[c] of every pixel through map(c, value).
  auto split = [&](auto* dst, auto map) {
    for (int y = 0; y < S; ++y) {
      const uint8_t* in = square.row(y);
      for (int c = 0; c < 3; ++c) {
        auto* d = dst + c * plane + static_cast<int64_t>(y) * S;
        const uint8_t* p = in + (order == ChannelOrder::kBgr ? 2 - c : c);
        for (int x = 0; x < S; ++x) d[x] = map(c, p[x * 3]);
      }
    }
  };
  if (out.scalar_type() == at::kByte) {
    split(out.data_ptr<uint8_t>(), [](int, uint8_t v) { return v; });
    return;
  }
  // x * a + b in float, rounded after each operation exactly as normalize_images computes it,
  // so both paths give the same floats.
  float lut[3][256];
  for (int c = 0; c < 3; ++c) {
    const auto [a, b] = normalize_coefficients(o.mean(), o.std(), c);
    for (int v = 0; v < 256; ++v) {
      volatile float scaled = static_cast<float>(v) * a;  // no fused multiply-add: two roundings
      lut[c][v] = scaled + b;
    }
  }
  split(out.data_ptr<float>(), [&](int c, uint8_t v) { return lut[c][v]; });
}

}  // namespace

Pixels resize_pil_bicubic(const PixelView& src, int width, int height) {
  TORCH_CHECK(src.data && src.channels >= 1 && src.channels <= 4 && width > 0 && height > 0,
              "resize_pil_bicubic: expects an 8-bit image of 1 to 4 channels and a positive size");
  // Pillow skips a pass whose size is unchanged; it rounds to uint8 between the two passes.
  if (width == src.cols && height == src.rows) return copy_pixels(src);
  if (width == src.cols) return resample_pass(src, height, /*horizontal=*/false);
  Pixels h = resample_pass(src, width, /*horizontal=*/true);
  return height == src.rows ? h : resample_pass(h.view(), height, /*horizontal=*/false);
}

void transform_pixels(const PixelView& src, ChannelOrder order, const ImageTransformOptions& o, std::mt19937_64& rng,
                      at::Tensor& out) {
  const int S = static_cast<int>(o.image_size());
  TORCH_CHECK(src.rows > 0 && src.cols > 0 && src.channels == 3, "transform: expects 3-channel pixels, got ", src.cols,
              "x", src.rows, "x", src.channels);
  Pixels resized;
  PixelView square;
  if (o.train()) {
    const CropBox b = random_resized_crop_box(src.rows, src.cols, o, rng);
    resized = resize(src.crop(b), S, S, o.resize());
    square = resized.view();
  } else if (src.rows == S && src.cols == S) {
    square = src;  // already the evaluation size (a tensor file packed at it): nothing to resample
  } else {
    // Resize so the shorter side is S (torchvision Resize(S)), then centre-crop S x S.
    const bool portrait = src.rows > src.cols;
    const int short_side = portrait ? src.cols : src.rows, long_side = portrait ? src.rows : src.cols;
    const int new_long = static_cast<int>(static_cast<int64_t>(S) * long_side / short_side);
    resized = portrait ? resize(src, S, new_long, o.resize()) : resize(src, new_long, S, o.resize());
    // Python's round() (half to even), as torchvision's center_crop.
    const int top = static_cast<int>(std::nearbyint((resized.rows - S) / 2.0));
    const int left = static_cast<int>(std::nearbyint((resized.cols - S) / 2.0));
    square = resized.view().crop({top, left, S, S});
  }
  write_planes(square, order, o, out);
}

at::Tensor normalize_images(const at::Tensor& images, const Rgb& mean, const Rgb& std) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3 && images.scalar_type() == at::kByte,
              "normalize_images: expects uint8 images [B, 3, S, S], got ", images.scalar_type(), " ", images.sizes());
  at::Tensor out = images.to(at::kFloat);  // [B, 3, S, S]
  for (int64_t c = 0; c < 3; ++c) {
    // Scalars, not small tensors: nothing is copied from the host, so nothing waits on a GPU.
    const auto [a, b] = normalize_coefficients(mean, std, c);
    out.select(1, c).mul_(a).add_(b);
  }
  return out;
}

bool have_image_decoders() { return TORCHCLIP_HAVE_OPENCV != 0; }

void require_image_decoders(const std::string& what) {
  if (!have_image_decoders())
    throw std::runtime_error(what + " needs OpenCV (image decoding and encoding), and this torchclip was built with "
                                    "TORCHCLIP_OPENCV=OFF: rebuild with -DTORCHCLIP_OPENCV=ON, or pack the images into a "
                                    "tensor file with `torchclip data pack` on a build that has it and use that");
}

#if TORCHCLIP_HAVE_OPENCV
PixelView pixel_view(const cv::Mat& m) {
  TORCH_CHECK(m.depth() == CV_8U && m.channels() >= 1 && m.channels() <= 4, "pixel_view: expects an 8-bit image");
  return {m.data, m.rows, m.cols, m.channels(), static_cast<int64_t>(m.step[0])};
}

cv::Mat resize_pil_bicubic(const cv::Mat& src, int width, int height) {
  TORCH_CHECK(src.depth() == CV_8U && src.channels() >= 1 && src.channels() <= 4 && width > 0 && height > 0,
              "resize_pil_bicubic: expects an 8-bit image of 1 to 4 channels and a positive size");
  Pixels p = resize_pil_bicubic(pixel_view(src), width, height);
  return cv::Mat(p.rows, p.cols, CV_8UC(p.channels), p.data.data()).clone();
}

void transform_image(const cv::Mat& bgr, const ImageTransformOptions& o, std::mt19937_64& rng, at::Tensor& out) {
  transform_pixels(pixel_view(bgr), ChannelOrder::kBgr, o, rng, out);
}
#endif

}  // namespace torchclip::data
