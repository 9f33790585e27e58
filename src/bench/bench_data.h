// `torchclip bench data`: images/s of decode + RandomResizedCrop + normalise + tokenise + batch,
// for torchclip's loader and, in the same run on the same files, open_clip's Python pipeline.
#pragma once

#include "config/enums.h"

#include <torch/arg.h>

#include <string>
#include <vector>

namespace torchclip {

struct BenchDataOptions {
  TORCH_ARG(int64_t, images) = 2000;
  TORCH_ARG(int, width) = 500;
  TORCH_ARG(int, height) = 375;
  TORCH_ARG(int, quality) = 90;
  TORCH_ARG(int64_t, image_size) = 224;
  TORCH_ARG(int64_t, batch) = 64;
  TORCH_ARG(int64_t, workers) = 2;
  /// "pil" (byte-exact with open_clip) or "fast" (OpenCV).
  TORCH_ARG(ResizeMode, resize) = ResizeMode::kPil;
  /// Run open_clip's pipeline too (needs python3 with open_clip).
  TORCH_ARG(bool, compare) = true;
  /// Alternate ours and open_clip this many times (the ratio is the median of the rounds').
  TORCH_ARG(int64_t, rounds) = 1;
  TORCH_ARG(std::string, python) = "python3";
  /// Folder for the generated JPEGs (default: a temporary folder, removed afterwards).
  TORCH_ARG(std::string, dir) = "";
  /// An existing CSV (filepath, title) to measure instead of generated JPEGs.
  TORCH_ARG(std::string, data) = "";
};

struct BenchDataResult {
  int64_t images = 0, workers = 0;
  std::string resize;
  /// Medians over the rounds.
  double ours_images_per_second = 0, ours_seconds = 0;
  double openclip_images_per_second = 0, openclip_seconds = 0;  // 0 when not run
  std::vector<double> ours_rounds, openclip_rounds;              // images/s per round
  std::string openclip_note;                                     // why it did not run, if it did not
  /// The median of the rounds' ratios.
  double ratio() const;
  std::string to_json() const;
  std::string to_text() const;
};

BenchDataResult bench_data(const BenchDataOptions& options);

}  // namespace torchclip
