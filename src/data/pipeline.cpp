#include "data/pipeline.h"

#include "io/fsutil.h"

#if TORCHCLIP_HAVE_OPENCV
#include "data/image.h"
#include <opencv2/core.hpp>
#endif

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cstring>
#include <fstream>

namespace torchclip::data {

void read_image_bytes(RawSample& raw) {
  if (!raw.image_bytes.empty() || raw.image_path.empty()) return;  // no path: the decoder names what is missing
  // A folder (a CSV row naming one) opens as a stream whose size reads as -1: say what the path
  // is instead.
  if (const std::string problem = file_problem(raw.image_path); !problem.empty())
    throw SampleError(problem == "is a folder, not a file" ? "image_is_folder" : "image_missing",
                      fmt::format("{}: {}", raw.image_path.empty() ? "''" : raw.image_path, problem));
  std::ifstream f(raw.image_path, std::ios::binary | std::ios::ate);
  if (!f) throw SampleError("image_missing", fmt::format("cannot open {}", raw.image_path));
  raw.image_bytes.resize(static_cast<size_t>(f.tellg()));
  f.seekg(0);
  f.read(raw.image_bytes.data(), static_cast<std::streamsize>(raw.image_bytes.size()));
  if (!f) throw SampleError("image_missing", fmt::format("cannot read {}", raw.image_path));
}

std::vector<int32_t> tokenize_caption(const Tokenizer& tokenizer, const std::string& caption, int64_t context_length,
                                      int& tokens) {
  auto ids = tokenizer.encode(caption);
  tokens = static_cast<int>(ids.size()) + 2;
  return pad_ids(tokenizer, std::move(ids), context_length);
}

Sample process_sample(RawSample& raw, const Tokenizer& tokenizer, const SampleOptions& options, std::mt19937_64& rng) {
  Sample s;
  s.origin = raw.origin;
  s.caption = raw.caption;
  s.path = raw.image_path;
  s.label = raw.label;
  try {
    if (!raw.error_reason.empty()) throw SampleError(raw.error_reason, raw.error_message);
    const int64_t S = options.transform().image_size();
    s.image = at::empty({3, S, S}, options.normalize() ? at::kFloat : at::kByte);
    if (raw.pixels.defined()) {  // decoded already: [H, W, 3] uint8 RGB
      const at::Tensor& p = raw.pixels;
      TORCH_CHECK(p.dim() == 3 && p.size(2) == 3 && p.scalar_type() == at::kByte && p.is_contiguous(),
                  "process_sample: pixels must be contiguous uint8 [H, W, 3]");
      s.height = static_cast<int>(p.size(0));
      s.width = static_cast<int>(p.size(1));
      transform_pixels({p.data_ptr<uint8_t>(), s.height, s.width, 3, s.width * 3}, ChannelOrder::kRgb,
                       options.transform(), rng, s.image);
    } else {
#if TORCHCLIP_HAVE_OPENCV
      read_image_bytes(raw);
      cv::Mat bgr = decode_image(raw.image_bytes, options.max_image_pixels());
      s.width = bgr.cols;
      s.height = bgr.rows;
      transform_image(bgr, options.transform(), rng, s.image);
#else
      require_image_decoders(fmt::format("{}: an encoded image", raw.origin));
#endif
    }
    s.ids = tokenize_caption(tokenizer, raw.caption, options.context_length(), s.tokens);
    s.ok = true;
  } catch (const SampleError& e) {
    s.reason = e.reason;
    s.message = e.what();
  }
#if TORCHCLIP_HAVE_OPENCV
  catch (const cv::Exception& e) {
    s.reason = "image_corrupt";
    s.message = e.what();
  }
#endif
  return s;
}

void collate(std::vector<Sample>& samples, Batch& out, const CollateOptions& options) {
  TORCH_CHECK(!samples.empty(), "collate: no samples");
  const int64_t n = static_cast<int64_t>(samples.size()), T = static_cast<int64_t>(samples[0].ids.size());
  const auto sizes = samples[0].image.sizes().vec();  // [3, S, S]
  const int64_t per_image = samples[0].image.numel();
  const at::ScalarType dtype = samples[0].image.scalar_type();  // float, or uint8 to normalise on the device
  const size_t image_bytes = static_cast<size_t>(per_image) * samples[0].image.element_size();
  if (options.pin_memory())
    TORCH_CHECK(at::hasCUDA(), "collate: pin_memory needs a CUDA build of torchclip and a CUDA device; this process has none");
  auto opts = at::TensorOptions().pinned_memory(options.pin_memory());
  out.images = at::empty({n, sizes[0], sizes[1], sizes[2]}, opts.dtype(dtype));  // [B, 3, S, S]
  out.texts = at::empty({n, T}, opts.dtype(at::kLong));                                // [B, T]
  out.labels = at::empty({n}, opts.dtype(at::kLong));                                  // [B]
  auto* dst = static_cast<char*>(out.images.data_ptr());
  int64_t* texts = out.texts.data_ptr<int64_t>();
  int64_t* labels = out.labels.data_ptr<int64_t>();
  out.origins.clear();
  out.image_paths.clear();
  out.captions.clear();
  out.image_sizes.clear();
  out.token_counts.clear();
  for (int64_t i = 0; i < n; ++i) {
    Sample& s = samples[i];
    TORCH_CHECK(s.ok && s.image.numel() == per_image && s.image.scalar_type() == dtype &&
                    static_cast<int64_t>(s.ids.size()) == T,
                "collate: sample ", i, " (", s.origin, ") is unusable or of another shape or type");
    std::memcpy(dst + i * image_bytes, s.image.data_ptr(), image_bytes);
    for (int64_t t = 0; t < T; ++t) texts[i * T + t] = s.ids[t];
    labels[i] = s.label;
    out.origins.push_back(std::move(s.origin));
    out.image_paths.push_back(std::move(s.path));
    out.captions.push_back(std::move(s.caption));
    out.image_sizes.emplace_back(s.width, s.height);
    out.token_counts.push_back(s.tokens);
  }
}

bool FailurePolicy::admit(const Sample& s, LoaderStats& stats) {
  if (s.ok) {
    consecutive_ = 0;
    ++stats.good;
    return true;
  }
  ++stats.skipped;
  ++stats.skipped_by_reason[s.reason];
  if (stats.examples[s.reason].size() < 3) stats.examples[s.reason].push_back(s.origin);
  if (stats.skipped <= log_first_) fmt::print(stderr, "data: skipped {}: {}: {}\n", s.origin, s.reason, s.message);
  if (++consecutive_ >= max_consecutive_) {
    throw std::runtime_error(fmt::format(
        "data: {} samples in a row could not be used (last: {}: {}: {}); check the data with `torchclip data check`, "
        "or raise max_consecutive_failures",
        consecutive_, s.origin, s.reason, s.message));
  }
  return false;
}

}  // namespace torchclip::data
