// The per-sample pieces the loader composes, each small and usable alone:
//
//   RawSample --read_image_bytes--> bytes --decode--> pixels --transform--> [3, S, S] float or uint8
//             --tokenize_caption--> ids;  then Samples --collate--> Batch (optionally pinned),
//   with FailurePolicy counting and reporting the samples that could not be used.
//
// None of them reads global state; randomness comes in as an argument (the loader seeds it from
// the sample's place in the epoch, which makes loading deterministic and resumable).
#pragma once

#include "data/source.h"
#include "data/transform.h"
#include "text/tokenizer.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace torchclip::data {

/// One sample after decoding, augmentation and tokenisation, or the reason it is unusable.
struct Sample {
  bool ok = false;
  at::Tensor image;            // [3, S, S] float, normalised; or uint8 RGB (SampleOptions::normalize off)
  std::vector<int32_t> ids;    // [context_length]
  int64_t label = -1;
  int width = 0, height = 0;   // the decoded image's size
  int tokens = 0;              // tokens before padding/truncation, with start/end
  std::string origin, caption, path;
  std::string reason, message;  // when !ok: a short reason the loader counts by, and the details
};

/// A batch of samples, in order.
struct Batch {
  at::Tensor images;  // [B, 3, S, S] float, or uint8 RGB to normalise on the device (normalize_images)
  at::Tensor texts;   // [B, context_length] int64
  at::Tensor labels;  // [B] int64, -1 where unknown
  std::vector<std::string> origins;
  std::vector<std::string> image_paths;  // empty for images read from shards
  std::vector<std::string> captions;
  std::vector<std::pair<int, int>> image_sizes;  // original (width, height)
  std::vector<int> token_counts;                 // tokens before padding/truncation, with start/end
};

/// Read: fills `raw.image_bytes` from `raw.image_path` when the source gave a path. Throws
/// SampleError("image_missing") naming the file.
void read_image_bytes(RawSample& raw);

/// Tokenize: `caption` as [sot] + ids + [eot] padded to `context_length`; `tokens` gets the
/// count before padding or truncation.
std::vector<int32_t> tokenize_caption(const Tokenizer& tokenizer, const std::string& caption, int64_t context_length,
                                      int& tokens);

struct SampleOptions {
  TORCH_ARG(ImageTransformOptions, transform) = {};
  TORCH_ARG(int64_t, context_length) = 77;
  /// Images whose header declares more pixels are refused before decoding.
  TORCH_ARG(int64_t, max_image_pixels) = 89478485;
  /// Normalise into float in the worker; off: uint8 RGB, 4x fewer bytes to copy to a GPU, where
  /// normalize_images turns it into the same floats.
  TORCH_ARG(bool, normalize) = true;
};

/// read -> decode -> transform -> tokenize for one sample. Never throws for a bad sample: the
/// returned Sample says why it is unusable.
Sample process_sample(RawSample& raw, const Tokenizer& tokenizer, const SampleOptions& options, std::mt19937_64& rng);

struct CollateOptions {
  /// Allocate the batch in page-locked memory so a copy to a GPU can run asynchronously
  /// (needs a CUDA build and device; refused with a message otherwise).
  TORCH_ARG(bool, pin_memory) = false;
};

/// Collate: stacks `samples` (all ok, same image size and context length) into `out`. Plain
/// copies on the calling thread: an ATen op here would wake the OpenMP pool, whose spinning
/// threads then compete with the decode workers for the cores.
void collate(std::vector<Sample>& samples, Batch& out, const CollateOptions& options = {});

/// Counts of usable and skipped samples, by reason, with a few examples.
struct LoaderStats {
  int64_t good = 0, skipped = 0;
  std::map<std::string, int64_t> skipped_by_reason;
  std::map<std::string, std::vector<std::string>> examples;  // a few origins per reason
  double wait_seconds = 0;  // time the consumer spent waiting for workers
};

/// The failure policy: every unusable sample is counted by reason, the first few are reported
/// on stderr with their origin, and too many in a row stop loading with an error naming the
/// last one.
class FailurePolicy {
 public:
  FailurePolicy(int64_t max_consecutive_failures, int64_t log_first_failures)
      : max_consecutive_(max_consecutive_failures), log_first_(log_first_failures) {}
  /// Records a sample; false when it must be skipped. Throws after too many failures in a row.
  bool admit(const Sample& sample, LoaderStats& stats);
  void reset_run() { consecutive_ = 0; }

 private:
  int64_t max_consecutive_, log_first_, consecutive_ = 0;
};

}  // namespace torchclip::data
