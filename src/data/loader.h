// The threaded loader: each worker thread reads its own part of the epoch (disjoint CSV rows or
// shards) and runs the per-sample pieces of data/pipeline.h on it; the consumer takes one sample
// from each worker in turn, applies the failure policy and collates. The order therefore depends
// only on the seed and the worker count, never on timing.
#pragma once

#include "data/pipeline.h"
#include "data/source.h"
#include "data/transform.h"
#include "text/tokenizer.h"

#include <ATen/core/Tensor.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace torchclip::data {

struct LoaderOptions {
  TORCH_ARG(int64_t, batch_size) = 64;
  /// Decode threads; each reads a disjoint part of the data.
  TORCH_ARG(int64_t, workers) = 2;
  /// Samples each worker may have ready ahead of the consumer.
  TORCH_ARG(int64_t, prefetch) = 64;
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(bool, shuffle) = true;
  TORCH_ARG(int64_t, shuffle_buffer) = 1000;
  TORCH_ARG(bool, drop_last) = true;
  TORCH_ARG(int64_t, context_length) = 77;
  /// Data-parallel position: this rank reads 1/world_size of the data.
  TORCH_ARG(int64_t, rank) = 0;
  TORCH_ARG(int64_t, world_size) = 1;
  /// Loading stops with an error after this many unusable samples in a row.
  TORCH_ARG(int64_t, max_consecutive_failures) = 100;
  /// Images whose header declares more pixels are refused before decoding.
  TORCH_ARG(int64_t, max_image_pixels) = 89478485;
  /// How many skipped samples are reported on stderr (the rest are only counted).
  TORCH_ARG(int64_t, log_first_failures) = 5;
  TORCH_ARG(ImageTransformOptions, transform) = {};
  /// Collate batches into page-locked memory (for asynchronous copies to a GPU).
  TORCH_ARG(bool, pin_memory) = false;
  /// Float batches normalised by the workers; off: uint8 batches for normalize_images on the device.
  TORCH_ARG(bool, normalize) = true;
};

/// Where the loader is within an epoch; enough to continue exactly (same worker count).
struct LoaderState {
  int64_t epoch = 0;
  uint64_t seed = 0;
  int64_t workers = 0;
  int64_t turn = 0;                 // the worker whose sample comes next
  std::vector<int64_t> consumed;    // raw samples taken from each worker
  std::vector<bool> exhausted;
  int64_t samples = 0, skipped = 0; // this epoch, for logs
  std::string to_string() const;
  /// Throws std::runtime_error naming what is wrong (a checkpoint's damaged loader state).
  static LoaderState from_string(const std::string& s);
};

class Loader {
 public:
  Loader(std::shared_ptr<const SampleSource> source, std::shared_ptr<const Tokenizer> tokenizer,
         LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  /// Starts `epoch` from its beginning, or from `resume` (which must be of the same epoch layout).
  void start_epoch(int64_t epoch);
  void resume(const LoaderState& state);
  /// The next batch; false when the epoch is over. Throws when too many samples fail in a row.
  bool next(Batch& out);
  LoaderState state() const;
  const LoaderStats& stats() const { return stats_; }
  const LoaderOptions& options() const { return options_; }
  const SampleSource& source() const { return *source_; }

 private:
  struct Worker;
  void start(const LoaderState& state);
  void stop();
  void run_worker(Worker& w, int64_t skip);

  std::shared_ptr<const SampleSource> source_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  LoaderOptions options_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<bool> stop_{false};
  LoaderState state_;
  LoaderStats stats_;
  FailurePolicy failures_;
};

}  // namespace torchclip::data
