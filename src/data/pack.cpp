#include "data/pack.h"

#include "io/safetensors.h"
#include "util/progress.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <stdexcept>
#include <vector>

namespace torchclip::data {

PackResult write_pack(std::shared_ptr<const SampleSource> source, std::shared_ptr<const Tokenizer> tokenizer,
                      const PackOptions& o) {
  if (o.out().empty()) throw std::invalid_argument("data pack: no output file (--out FILE.safetensors)");
  if (o.image_size() < 1 || o.image_size() > 4096)
    throw std::invalid_argument(fmt::format("data pack: --image-size {} is outside [1, 4096]", o.image_size()));
  const int64_t S = o.image_size();
  const std::string description = source->describe();
  const int64_t expected = source->size();
  Loader loader(std::move(source), std::move(tokenizer),
                LoaderOptions()
                    .batch_size(256)
                    .workers(o.workers())
                    .shuffle(false)
                    .drop_last(false)
                    .max_consecutive_failures(o.max_consecutive_failures())
                    .normalize(false)  // uint8 pixels
                    .transform(ImageTransformOptions().image_size(S).train(false).resize(o.resize())));
  loader.start_epoch(0);

  SafetensorsWriter writer(o.out());
  std::string captions;
  std::vector<int64_t> offsets{0}, labels;
  Progress bar("pack", expected > 0 ? expected : 0, "img");
  Batch b;
  writer.begin("images", at::kByte);
  while (loader.next(b)) {
    const at::Tensor hwc = b.images.permute({0, 2, 3, 1}).contiguous();  // [B, S, S, 3]
    writer.write(hwc.data_ptr(), hwc.nbytes());
    const int64_t* l = b.labels.data_ptr<int64_t>();
    for (size_t i = 0; i < b.captions.size(); ++i) {
      captions += b.captions[i];
      offsets.push_back(static_cast<int64_t>(captions.size()));
      labels.push_back(l[i]);
    }
    if (o.progress()) bar.advance(static_cast<int64_t>(b.captions.size()));
  }
  const int64_t n = static_cast<int64_t>(labels.size());
  if (n == 0) throw std::runtime_error(fmt::format("data pack: {} has no usable sample", description));
  writer.end({n, S, S, 3});
  writer.begin("caption_bytes", at::kByte);
  writer.write(captions.data(), captions.size());
  writer.end({static_cast<int64_t>(captions.size())});
  writer.begin("caption_offsets", at::kLong);
  writer.write(offsets.data(), offsets.size() * sizeof(int64_t));
  writer.end({n + 1});
  writer.begin("labels", at::kLong);
  writer.write(labels.data(), labels.size() * sizeof(int64_t));
  writer.end({n});
  const LoaderStats& st = loader.stats();
  writer.finish({{"format", kPackFormat},
                 {"image_size", std::to_string(S)},
                 {"resize", enum_name(o.resize())},
                 {"source", description.substr(0, 4000)},
                 {"count", std::to_string(n)},
                 {"skipped", std::to_string(st.skipped)}});
  if (o.progress()) bar.finish();

  PackResult r;
  r.images = n;
  r.skipped = st.skipped;
  r.skipped_by_reason = st.skipped_by_reason;
  r.bytes = n * S * S * 3 + static_cast<int64_t>(captions.size()) + (2 * n + 1) * 8;
  r.seconds = bar.elapsed_seconds();
  return r;
}

}  // namespace torchclip::data
