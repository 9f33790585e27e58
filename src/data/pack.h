// `torchclip data pack`: any source -> one tensor file of decoded uint8 images with their
// captions and labels (the format pack_source reads, in data/source.h). Training from it needs no
// image decoder (builds with TORCHCLIP_OPENCV=OFF train on real images) and no decode work, the
// fastest input for small images.
//
//   FILE.safetensors   images           uint8 [N, S, S, 3] RGB, centre-cropped and resized as
//                                       evaluation does (training's RandomResizedCrop cuts from it)
//                      caption_bytes    uint8 [total]   UTF-8 captions back to back
//                      caption_offsets  int64 [N + 1]   caption i is bytes [off[i], off[i + 1])
//                      labels           int64 [N]       -1 where the source has none
//                      __metadata__     format, image_size, resize, source, count, skipped
#pragma once

#include "data/loader.h"

#include <torch/arg.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace torchclip::data {

struct PackOptions {
  TORCH_ARG(std::string, out) = "";
  /// Side of the square images stored: the model's image_size, or larger to crop from.
  TORCH_ARG(int64_t, image_size) = 224;
  TORCH_ARG(ResizeMode, resize) = ResizeMode::kPil;
  TORCH_ARG(int64_t, workers) = 2;
  TORCH_ARG(int64_t, max_consecutive_failures) = 100;
  TORCH_ARG(bool, progress) = true;
};

struct PackResult {
  int64_t images = 0, skipped = 0, bytes = 0;
  std::map<std::string, int64_t> skipped_by_reason;
  double seconds = 0;
};

/// Reads `source` in order (no shuffling, every sample once), skipping and counting unusable
/// samples, and streams the tensor file to `options.out` (memory use is one batch, not the file).
PackResult write_pack(std::shared_ptr<const SampleSource> source, std::shared_ptr<const Tokenizer> tokenizer,
                      const PackOptions& options);

}  // namespace torchclip::data
