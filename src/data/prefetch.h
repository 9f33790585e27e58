// Prefetch: the loader's next batches collated on a background thread while the caller works on
// the current one (a training step, a copy to a GPU). The batches, their order and the loader
// position that goes with each are exactly those of calling Loader::next directly, so a
// checkpoint taken between batches resumes exactly.
#pragma once

#include "data/loader.h"

#include <c10/core/Device.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>

#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>

namespace torchclip::data {

class BatchPrefetcher {
 public:
  /// Keeps up to `depth` batches ready from `loader`, which must outlive this object and must
  /// not be used directly while it runs. Starts at the loader's current position.
  explicit BatchPrefetcher(Loader& loader, int64_t depth = 1);
  ~BatchPrefetcher();
  BatchPrefetcher(const BatchPrefetcher&) = delete;
  BatchPrefetcher& operator=(const BatchPrefetcher&) = delete;

  /// The next batch; false at the end of the epoch. Rethrows the loader's errors.
  bool next(Batch& out);
  /// The loader's position after the last batch next() returned (what a checkpoint saves).
  LoaderState state() const { return state_; }
  /// Stops prefetching, then Loader::start_epoch / Loader::resume, and prefetches again.
  void start_epoch(int64_t epoch);
  void resume(const LoaderState& state);

 private:
  struct Item {
    bool ok = false;
    Batch batch;
    LoaderState state;
    std::exception_ptr error;
  };
  void start();
  void stop();
  void run();

  Loader& loader_;
  int64_t depth_;
  LoaderState state_;
  std::mutex mutex_;
  std::condition_variable ready_, space_;
  std::deque<Item> queue_;
  bool stop_ = false, finished_ = false;
  std::thread thread_;
};

/// A batch on the model's device.
struct DeviceBatch {
  at::Tensor images;  // [B, 3, S, S] float, normalised (on the device when the loader gave uint8)
  at::Tensor texts;   // [B, T'] int64; T' <= context_length when trimmed to the longest caption
  int64_t epoch = 0;
};

struct DeviceFeedOptions {
  /// Cut the token columns after the longest caption's end (from the host-side token counts), so
  /// no device work or sync is spent on padding. Exact only for a causal text tower pooled at or
  /// before the end token (the trainer decides).
  TORCH_ARG(bool, trim_text) = false;
  /// Batches copied ahead (0: copy when asked; 1: the next batch's copy runs during this step).
  TORCH_ARG(int64_t, ahead) = 1;
};

/// The loader's batches on a device, one ahead: on CUDA, while a step runs on batch k, batch
/// k + 1 (collated in pinned memory) is copied non_blocking on a side stream; next() makes the
/// compute stream wait for that copy's event and marks the memory as used there. uint8 images
/// are normalised on the device (normalize_images), float ones are copied as they are. An epoch
/// that ends rolls over to the next; an epoch that yields no batch at all is an error saying so.
/// state() is the loader position after the last batch next() returned, so checkpoints resume
/// exactly with the in-flight batch read again.
class DeviceFeed {
 public:
  DeviceFeed(Loader& loader, c10::Device device, DeviceFeedOptions options = {});
  DeviceBatch next();
  LoaderState state() const { return state_; }

 private:
  struct Pending {
    at::Tensor images, texts;
    LoaderState state;
    std::optional<c10::Event> copied;  // recorded on the side stream after this batch's copies
  };
  Pending fetch();

  Loader& loader_;
  c10::Device device_;
  DeviceFeedOptions options_;
  std::optional<c10::Stream> side_;  // CUDA only
  std::deque<Pending> pending_;
  LoaderState state_;
};

}  // namespace torchclip::data
