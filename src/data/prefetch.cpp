#include "data/prefetch.h"

#include <ATen/ATen.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <fmt/format.h>

#include <algorithm>

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

DeviceFeed::DeviceFeed(Loader& loader, c10::Device device, DeviceFeedOptions options)
    : loader_(loader), device_(device), options_(options), state_(loader.state()) {
  TORCH_CHECK(options_.ahead() >= 0 && options_.ahead() <= 8, "DeviceFeed: ahead must be in [0, 8], got ", options_.ahead());
  if (device_.is_cuda()) side_ = c10::impl::getDeviceGuardImpl(device_.type())->getStreamFromGlobalPool(device_);
}

DeviceFeed::Pending DeviceFeed::fetch() {
  Batch b;
  if (!loader_.next(b)) {
    const int64_t ended = loader_.state().epoch;
    loader_.start_epoch(ended + 1);
    if (!loader_.next(b))
      throw std::runtime_error(fmt::format(
          "data: epoch {} yielded no batch of {} (usable samples this epoch: {}, skipped: {}); the data has fewer usable "
          "samples per rank than one batch needs",
          ended + 1, loader_.options().batch_size(), loader_.state().samples, loader_.state().skipped));
  }
  Pending p;
  p.state = loader_.state();
  at::Tensor texts = b.texts;  // [B, T]
  if (options_.trim_text() && !b.token_counts.empty()) {
    const int64_t longest = *std::max_element(b.token_counts.begin(), b.token_counts.end());
    if (longest < texts.size(1)) {
      // A contiguous copy in the same kind of memory, so the copy to the device stays asynchronous.
      at::Tensor cut = at::empty({texts.size(0), longest}, texts.options().pinned_memory(texts.is_pinned()));
      texts = cut.copy_(texts.slice(1, 0, longest));  // [B, T']
    }
  }
  std::optional<c10::StreamGuard> on_side;
  if (side_) on_side.emplace(*side_);
  p.images = b.images.to(device_, /*non_blocking=*/true);
  p.texts = texts.to(device_, /*non_blocking=*/true);
  if (side_) {
    p.copied.emplace(device_.type());
    p.copied->record(*side_);
  }
  return p;
}

DeviceBatch DeviceFeed::next() {
  while (static_cast<int64_t>(pending_.size()) <= options_.ahead()) pending_.push_back(fetch());
  Pending p = std::move(pending_.front());
  pending_.pop_front();
  state_ = p.state;
  if (side_) {
    // The compute stream waits for the copy; the caching allocator must not hand the memory
    // (allocated on the side stream) to anything else before the compute stream is done with it.
    const auto* impl = c10::impl::getDeviceGuardImpl(device_.type());
    const c10::Stream compute = impl->getStream(device_);
    p.copied->block(compute);
    for (const at::Tensor* t : {&p.images, &p.texts}) impl->recordDataPtrOnStream(t->storage().data_ptr(), compute);
  }
  DeviceBatch out;
  out.epoch = p.state.epoch;
  out.texts = p.texts;
  const ImageTransformOptions& t = loader_.options().transform();
  out.images = p.images.scalar_type() == at::kByte ? normalize_images(p.images, t.mean(), t.std()) : p.images;
  return out;
}

}  // namespace torchclip::data
