#include "data/prefetch.h"

namespace torchclip::data {

BatchPrefetcher::BatchPrefetcher(Loader& loader, int64_t depth) : loader_(loader), depth_(depth) {
  TORCH_CHECK(depth_ > 0, "BatchPrefetcher: depth must be positive, got ", depth_);
  state_ = loader_.state();
  start();
}

BatchPrefetcher::~BatchPrefetcher() { stop(); }

void BatchPrefetcher::start() {
  stop_ = finished_ = false;
  queue_.clear();
  thread_ = std::thread([this] { run(); });
}

void BatchPrefetcher::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  space_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void BatchPrefetcher::run() {
  for (;;) {
    Item item;
    try {
      item.ok = loader_.next(item.batch);
      item.state = loader_.state();
    } catch (...) {
      item.error = std::current_exception();
    }
    const bool last = !item.ok;  // the end of the epoch, or an error
    std::unique_lock<std::mutex> lock(mutex_);
    space_.wait(lock, [&] { return stop_ || static_cast<int64_t>(queue_.size()) < depth_; });
    if (stop_) return;
    queue_.push_back(std::move(item));
    ready_.notify_one();
    if (last) return;
  }
}

bool BatchPrefetcher::next(Batch& out) {
  Item item;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    if (finished_) return false;
    ready_.wait(lock, [&] { return !queue_.empty(); });
    item = std::move(queue_.front());
    queue_.pop_front();
  }
  space_.notify_one();
  if (item.error) {
    finished_ = true;
    std::rethrow_exception(item.error);
  }
  if (!item.ok) {
    finished_ = true;
    state_ = item.state;
    return false;
  }
  out = std::move(item.batch);
  state_ = item.state;
  return true;
}

void BatchPrefetcher::start_epoch(int64_t epoch) {
  stop();
  loader_.start_epoch(epoch);
  state_ = loader_.state();
  start();
}

void BatchPrefetcher::resume(const LoaderState& state) {
  stop();
  loader_.resume(state);
  state_ = loader_.state();
  start();
}

}  // namespace torchclip::data
