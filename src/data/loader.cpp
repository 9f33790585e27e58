#include "data/loader.h"

#include "data/image.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <opencv2/core.hpp>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>

namespace torchclip::data {

struct Loader::Item {
  bool ok = false;
  at::Tensor image;
  std::vector<int32_t> ids;
  int64_t label = -1;
  int width = 0, height = 0, tokens = 0;
  std::string origin, caption, path, reason, message;
};

struct Loader::Worker {
  int64_t index = 0;
  std::mutex mutex;
  std::condition_variable not_empty, not_full;
  std::deque<Item> queue;
  bool done = false;
  std::exception_ptr error;
  std::thread thread;
};

Loader::Loader(std::shared_ptr<const SampleSource> source, std::shared_ptr<const Tokenizer> tokenizer,
               LoaderOptions options)
    : source_(std::move(source)), tokenizer_(std::move(tokenizer)), options_(std::move(options)) {
  TORCH_CHECK(source_ && tokenizer_, "Loader: source and tokenizer are required");
  TORCH_CHECK(options_.batch_size() > 0 && options_.workers() > 0 && options_.prefetch() > 0,
              "Loader: batch_size, workers and prefetch must be positive");
  // Parallelism comes from the workers; OpenCV's own thread pool would oversubscribe the cores.
  cv::setNumThreads(0);
  TORCH_CHECK(options_.world_size() > 0 && options_.rank() >= 0 && options_.rank() < options_.world_size(),
              "Loader: rank ", options_.rank(), " is outside world_size ", options_.world_size());
}

Loader::~Loader() { stop(); }

void Loader::stop() {
  stop_ = true;
  for (auto& w : workers_) {
    {
      std::lock_guard<std::mutex> lock(w->mutex);
    }
    w->not_full.notify_all();
  }
  for (auto& w : workers_)
    if (w->thread.joinable()) w->thread.join();
  workers_.clear();
  stop_ = false;
}

void Loader::start_epoch(int64_t epoch) {
  LoaderState s;
  s.epoch = epoch;
  s.seed = options_.seed();
  s.workers = options_.workers();
  s.consumed.assign(s.workers, 0);
  s.exhausted.assign(s.workers, false);
  start(s);
}

void Loader::resume(const LoaderState& state) {
  TORCH_CHECK(state.workers == options_.workers(), "Loader: the saved position was taken with ", state.workers,
              " workers, this loader has ", options_.workers(), "; resume with the same data.workers");
  TORCH_CHECK(state.seed == options_.seed(), "Loader: the saved position was taken with seed ", state.seed,
              ", this loader has ", options_.seed());
  start(state);
}

void Loader::start(const LoaderState& s) {
  stop();
  state_ = s;
  consecutive_failures_ = 0;
  for (int64_t i = 0; i < s.workers; ++i) {
    auto w = std::make_unique<Worker>();
    w->index = i;
    w->done = s.exhausted[i];
    workers_.push_back(std::move(w));
  }
  for (auto& w : workers_) {
    if (w->done) continue;
    Worker* worker = w.get();
    const int64_t skip = s.consumed[worker->index];
    worker->thread = std::thread([this, worker, skip] { run_worker(*worker, skip); });
  }
}

Loader::Item Loader::process(RawSample& raw, std::mt19937_64& rng) const {
  Item item;
  item.origin = raw.origin;
  item.caption = raw.caption;
  item.path = raw.image_path;
  item.label = raw.label;
  try {
    if (!raw.error_reason.empty()) throw SampleError(raw.error_reason, raw.error_message);
    if (raw.image_bytes.empty() && !raw.image_path.empty()) {
      std::ifstream f(raw.image_path, std::ios::binary | std::ios::ate);
      if (!f) throw SampleError("image_missing", fmt::format("cannot open {}", raw.image_path));
      raw.image_bytes.resize(static_cast<size_t>(f.tellg()));
      f.seekg(0);
      f.read(raw.image_bytes.data(), static_cast<std::streamsize>(raw.image_bytes.size()));
      if (!f) throw SampleError("image_missing", fmt::format("cannot read {}", raw.image_path));
    }
    cv::Mat bgr = decode_image(raw.image_bytes, options_.max_image_pixels());
    item.width = bgr.cols;
    item.height = bgr.rows;
    const int64_t S = options_.transform().image_size();
    item.image = at::empty({3, S, S}, at::kFloat);
    transform_image(bgr, options_.transform(), rng, item.image);
    auto ids = tokenizer_->encode(raw.caption);
    item.tokens = static_cast<int>(ids.size()) + 2;
    item.ids = pad_ids(*tokenizer_, std::move(ids), options_.context_length());
    item.ok = true;
  } catch (const SampleError& e) {
    item.reason = e.reason;
    item.message = e.what();
  } catch (const cv::Exception& e) {
    item.reason = "image_corrupt";
    item.message = e.what();
  }
  return item;
}

void Loader::run_worker(Worker& w, int64_t skip) {
  try {
    StreamSpec spec;
    spec.seed = state_.seed;
    spec.epoch = state_.epoch;
    spec.rank = options_.rank();
    spec.world_size = options_.world_size();
    spec.worker = w.index;
    spec.workers = state_.workers;
    spec.shuffle = options_.shuffle();
    spec.shuffle_buffer = options_.shuffle_buffer();
    auto stream = source_->open(spec);
    RawSample raw;
    for (int64_t n = 0; !stop_ && stream->next(raw); ++n) {
      if (n < skip) continue;  // resuming: already consumed
      // Augmentation randomness is a function of the sample's place in the epoch alone.
      std::seed_seq seq{static_cast<uint64_t>(state_.seed), static_cast<uint64_t>(state_.epoch),
                        static_cast<uint64_t>(options_.rank()), static_cast<uint64_t>(w.index), static_cast<uint64_t>(n)};
      std::mt19937_64 rng(seq);
      Item item = process(raw, rng);
      std::unique_lock<std::mutex> lock(w.mutex);
      w.not_full.wait(lock, [&] { return stop_ || static_cast<int64_t>(w.queue.size()) < options_.prefetch(); });
      if (stop_) return;
      w.queue.push_back(std::move(item));
      w.not_empty.notify_one();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(w.mutex);
    w.error = std::current_exception();
  }
  std::lock_guard<std::mutex> lock(w.mutex);
  w.done = true;
  w.not_empty.notify_one();
}

bool Loader::next(Batch& out) {
  const int64_t B = options_.batch_size();
  std::vector<Item> items;
  items.reserve(B);
  while (static_cast<int64_t>(items.size()) < B) {
    // Take from the workers in turn, skipping exhausted ones.
    int64_t live = 0;
    for (bool e : state_.exhausted) live += !e;
    if (live == 0) break;
    const int64_t k = state_.turn;
    state_.turn = (state_.turn + 1) % state_.workers;
    if (state_.exhausted[k]) continue;
    Worker& w = *workers_[k];
    Item item;
    {
      std::unique_lock<std::mutex> lock(w.mutex);
      auto t0 = std::chrono::steady_clock::now();
      w.not_empty.wait(lock, [&] { return !w.queue.empty() || w.done; });
      stats_.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (w.queue.empty()) {
        if (w.error) std::rethrow_exception(w.error);
        state_.exhausted[k] = true;
        continue;
      }
      item = std::move(w.queue.front());
      w.queue.pop_front();
      w.not_full.notify_one();
    }
    ++state_.consumed[k];
    if (!item.ok) {
      ++stats_.skipped;
      ++state_.skipped;
      auto& n = stats_.skipped_by_reason[item.reason];
      if (stats_.examples[item.reason].size() < 3) stats_.examples[item.reason].push_back(item.origin);
      if (stats_.skipped <= options_.log_first_failures()) {
        fmt::print(stderr, "data: skipped {}: {}: {}\n", item.origin, item.reason, item.message);
      }
      ++n;
      if (++consecutive_failures_ >= options_.max_consecutive_failures()) {
        throw std::runtime_error(fmt::format(
            "data: {} samples in a row could not be used (last: {}: {}: {}); check the data with "
            "`torchclip data check`, or raise max_consecutive_failures", consecutive_failures_, item.origin,
            item.reason, item.message));
      }
      continue;
    }
    consecutive_failures_ = 0;
    ++stats_.good;
    ++state_.samples;
    items.push_back(std::move(item));
  }
  if (items.empty() || (options_.drop_last() && static_cast<int64_t>(items.size()) < B)) return false;
  const int64_t n = static_cast<int64_t>(items.size()), T = options_.context_length();
  const int64_t S = options_.transform().image_size(), per_image = 3 * S * S;
  // Plain copies on this thread: an ATen op here (at::stack) would wake the OpenMP pool, whose
  // spinning threads then compete with the decode workers for the same cores.
  out.images = at::empty({n, 3, S, S}, at::kFloat);
  float* dst = out.images.data_ptr<float>();
  out.texts = at::empty({n, T}, at::kLong);
  out.labels = at::empty({n}, at::kLong);
  auto texts = out.texts.accessor<int64_t, 2>();
  auto labels = out.labels.accessor<int64_t, 1>();
  out.origins.clear();
  out.image_paths.clear();
  out.captions.clear();
  out.image_sizes.clear();
  out.token_counts.clear();
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(dst + i * per_image, items[i].image.data_ptr<float>(), per_image * sizeof(float));
    for (int64_t t = 0; t < T; ++t) texts[i][t] = items[i].ids[t];
    labels[i] = items[i].label;
    out.origins.push_back(std::move(items[i].origin));
    out.image_paths.push_back(std::move(items[i].path));
    out.captions.push_back(std::move(items[i].caption));
    out.image_sizes.emplace_back(items[i].width, items[i].height);
    out.token_counts.push_back(items[i].tokens);
  }
  return true;  // out.images: [B, 3, S, S]
}

LoaderState Loader::state() const { return state_; }

std::string LoaderState::to_string() const {
  std::string s = fmt::format("loader-v1 {} {} {} {} {} {}", epoch, seed, workers, turn, samples, skipped);
  for (int64_t i = 0; i < workers; ++i) s += fmt::format(" {}:{}", consumed[i], exhausted[i] ? 1 : 0);
  return s;
}

LoaderState LoaderState::from_string(const std::string& text) {
  std::istringstream in(text);
  std::string magic;
  LoaderState s;
  in >> magic >> s.epoch >> s.seed >> s.workers >> s.turn >> s.samples >> s.skipped;
  if (magic != "loader-v1" || !in || s.workers <= 0 || s.turn < 0 || s.turn >= s.workers)
    throw std::invalid_argument("loader state: expected 'loader-v1 EPOCH SEED WORKERS TURN SAMPLES SKIPPED C:E...', got '" +
                                text + "'");
  for (int64_t i = 0; i < s.workers; ++i) {
    int64_t c = 0;
    int e = 0;
    char colon = 0;
    if (!(in >> c >> colon >> e) || colon != ':' || c < 0)
      throw std::invalid_argument("loader state: bad worker entry " + std::to_string(i) + " in '" + text + "'");
    s.consumed.push_back(c);
    s.exhausted.push_back(e != 0);
  }
  return s;
}

}  // namespace torchclip::data
