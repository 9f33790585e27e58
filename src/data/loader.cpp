#include "data/loader.h"


#include <ATen/ATen.h>
#include <fmt/format.h>

#include <chrono>
#include <sstream>

namespace torchclip::data {

struct Loader::Worker {
  int64_t index = 0;
  std::mutex mutex;
  std::condition_variable not_empty, not_full;
  std::deque<Sample> queue;
  bool done = false;
  std::exception_ptr error;
  std::thread thread;
};

Loader::Loader(std::shared_ptr<const SampleSource> source, std::shared_ptr<const Tokenizer> tokenizer,
               LoaderOptions options)
    : source_(std::move(source)),
      tokenizer_(std::move(tokenizer)),
      options_(std::move(options)),
      failures_(options_.max_consecutive_failures(), options_.log_first_failures()) {
  TORCH_CHECK(source_ && tokenizer_, "Loader: source and tokenizer are required");
  TORCH_CHECK(options_.batch_size() > 0 && options_.workers() > 0 && options_.prefetch() > 0,
              "Loader: batch_size, workers and prefetch must be positive");
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
  failures_.reset_run();
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
    const SampleOptions sample_options = SampleOptions()
                                             .transform(options_.transform())
                                             .context_length(options_.context_length())
                                             .max_image_pixels(options_.max_image_pixels())
                                             .normalize(options_.normalize());
    RawSample raw;
    for (int64_t n = 0; !stop_ && stream->next(raw); ++n) {
      if (n < skip) continue;  // resuming: already consumed
      // Augmentation randomness is a function of the sample's place in the epoch alone.
      std::seed_seq seq{static_cast<uint64_t>(state_.seed), static_cast<uint64_t>(state_.epoch),
                        static_cast<uint64_t>(options_.rank()), static_cast<uint64_t>(w.index), static_cast<uint64_t>(n)};
      std::mt19937_64 rng(seq);
      Sample item = process_sample(raw, *tokenizer_, sample_options, rng);
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
  std::vector<Sample> samples;
  samples.reserve(B);
  while (static_cast<int64_t>(samples.size()) < B) {
    // Take from the workers in turn, skipping exhausted ones.
    int64_t live = 0;
    for (bool e : state_.exhausted) live += !e;
    if (live == 0) break;
    const int64_t k = state_.turn;
    state_.turn = (state_.turn + 1) % state_.workers;
    if (state_.exhausted[k]) continue;
    Worker& w = *workers_[k];
    Sample sample;
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
      sample = std::move(w.queue.front());
      w.queue.pop_front();
      w.not_full.notify_one();
    }
    ++state_.consumed[k];
    if (!failures_.admit(sample, stats_)) {
      ++state_.skipped;
      continue;
    }
    ++state_.samples;
    samples.push_back(std::move(sample));
  }
  if (samples.empty() || (options_.drop_last() && static_cast<int64_t>(samples.size()) < B)) return false;
  collate(samples, out, CollateOptions().pin_memory(options_.pin_memory()));
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
    throw std::runtime_error("loader state: expected 'loader-v1 EPOCH SEED WORKERS TURN SAMPLES SKIPPED C:E...', got '" +
                                text + "'");
  for (int64_t i = 0; i < s.workers; ++i) {
    int64_t c = 0;
    int e = 0;
    char colon = 0;
    if (!(in >> c >> colon >> e) || colon != ':' || c < 0)
      throw std::runtime_error("loader state: bad worker entry " + std::to_string(i) + " in '" + text + "'");
    s.consumed.push_back(c);
    s.exhausted.push_back(e != 0);
  }
  return s;
}

}  // namespace torchclip::data
