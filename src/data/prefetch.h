// Prefetch: the loader's next batches collated on a background thread while the caller works on
// the current one (a training step, a copy to a GPU). The batches, their order and the loader
// position that goes with each are exactly those of calling Loader::next directly, so a
// checkpoint taken between batches resumes exactly.
#pragma once

#include "data/loader.h"

#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
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

}  // namespace torchclip::data
