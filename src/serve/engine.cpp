#include "serve/engine.h"

#include "data/image.h"
#include "eval/zeroshot.h"
#include "io/fsutil.h"
#include "search/index.h"
#include "text/tokenizer.h"
#include "util/device.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <thread>

namespace torchclip::serve {

namespace {

using Clock = std::chrono::steady_clock;

/// One request's work for the worker: texts or preprocessed images to embed (and search with,
/// when k > 0), or a task that needs the towers (building a zero-shot classifier).
struct Job {
  enum class Kind { kText, kImage, kTask } kind = Kind::kText;
  std::vector<std::string> texts;  // kText
  at::Tensor images;               // kImage: [n, 3, S, S] float
  int64_t k = 0;                   // > 0: search the index with the embeddings
  std::function<void(Job&)> task;  // kTask: runs on the worker; owns copies of what it reads
  // Results, valid once `done` is ready.
  at::Tensor embeddings;  // [n, E] float, normalised
  int64_t tokens = 0;
  std::vector<std::vector<SearchHit>> hits;  // [n][<= k]
  std::exception_ptr error;                  // this job's own failure (a search), the others' results stand
  std::promise<void> done;
  std::atomic<bool> abandoned{false};  // the requester timed out: skip the work

  int64_t count() const { return kind == Kind::kText ? static_cast<int64_t>(texts.size()) : kind == Kind::kImage ? images.size(0) : 1; }
};

std::vector<std::vector<float>> rows_of(const at::Tensor& m) {  // [n, E] float -> n vectors
  const auto c = m.contiguous();
  std::vector<std::vector<float>> out(static_cast<size_t>(c.size(0)));
  const float* p = c.data_ptr<float>();
  for (int64_t i = 0; i < c.size(0); ++i) out[i].assign(p + i * c.size(1), p + (i + 1) * c.size(1));
  return out;
}

std::vector<Hit> hits_of(const std::vector<SearchHit>& h) {
  std::vector<Hit> out;
  out.reserve(h.size());
  for (const auto& x : h) out.push_back({x.row, x.score});
  return out;
}

}  // namespace

struct Engine::Impl {
  EngineOptions options;
  Metrics* metrics = nullptr;
  LoadedModel model;
  ImageIndex index;
  std::string index_path;
  std::string model_name;  // the model folder's name: clients see no path of the server's
  ResizeMode resize = ResizeMode::kPil;

  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::shared_ptr<Job>> queue;
  bool stopping = false;
  std::thread worker;

  std::mutex classifiers_mu;
  std::map<std::string, ZeroShotClassifier> saved;  // add_classifier
  std::map<std::string, at::Tensor> built;          // "class\x1f...\x1etemplate..." -> [E, C]

  /// Queues `job` and waits for it; a job that outlives the request timeout is abandoned (503).
  void run(const std::shared_ptr<Job>& job) {
    auto done = job->done.get_future();
    {
      std::lock_guard<std::mutex> lock(mu);
      if (stopping) throw RequestError(503, "the server is shutting down");
      queue.push_back(job);
    }
    cv.notify_one();
    if (done.wait_for(std::chrono::duration<double>(options.request_timeout_s)) != std::future_status::ready) {
      job->abandoned = true;
      throw RequestError(503, fmt::format("the request was not answered within {} s (--request-timeout); the server is "
                                          "overloaded",
                                          options.request_timeout_s));
    }
    done.get();  // rethrows the worker's error
  }

  at::Tensor preprocess(std::string_view bytes) const {  // [3, S, S]
    at::Tensor img;
    try {
      preprocess_image_bytes(model, bytes, resize, img, options.max_image_pixels);
    } catch (const data::SampleError& e) {
      if (e.reason == "image_too_large")
        throw RequestError(413, fmt::format("the image is too large: {} (the limit is {} pixels)", e.what(), options.max_image_pixels));
      throw RequestError(400, fmt::format("the upload is not a usable image ({}): {}", e.reason, e.what()));
    }
    return img;
  }

  /// The worker: takes the first queued job and every job of its kind queued within the batch
  /// wait (up to max_batch inputs), runs them together, repeats; returns once stopping and empty.
  void loop() {
    c10::InferenceMode inference;
    for (;;) {
      std::vector<std::shared_ptr<Job>> batch;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return stopping || !queue.empty(); });
        if (queue.empty()) return;
        batch.push_back(queue.front());
        queue.pop_front();
        if (batch[0]->kind != Job::Kind::kTask) {
          int64_t n = batch[0]->count();
          auto take_same_kind = [&] {
            for (auto it = queue.begin(); it != queue.end() && n < options.max_batch;) {
              if ((*it)->kind == batch[0]->kind && n + (*it)->count() <= options.max_batch) {
                n += (*it)->count();
                batch.push_back(*it);
                it = queue.erase(it);
              } else {
                ++it;
              }
            }
          };
          const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                   std::chrono::duration<double, std::milli>(options.batch_wait_ms));
          for (;;) {
            take_same_kind();
            if (n >= options.max_batch || stopping) break;
            if (cv.wait_until(lock, deadline) == std::cv_status::timeout) {
              take_same_kind();
              break;
            }
          }
        }
      }
      std::vector<std::shared_ptr<Job>> live;
      for (auto& j : batch) {
        if (j->abandoned) j->done.set_exception(std::make_exception_ptr(RequestError(503, "abandoned")));
        else live.push_back(j);
      }
      if (live.empty()) continue;
      try {
        execute(live);
        for (auto& j : live) j->error ? j->done.set_exception(j->error) : j->done.set_value();
      } catch (...) {
        for (auto& j : live) j->done.set_exception(std::current_exception());
      }
    }
  }

  /// Embeds the inputs of `jobs` (all of one kind) in tower calls of at most max_batch inputs,
  /// then runs one search for every query among them.
  void execute(const std::vector<std::shared_ptr<Job>>& jobs) {
    const Job::Kind kind = jobs[0]->kind;
    if (kind == Job::Kind::kTask) {
      jobs[0]->task(*jobs[0]);
      return;
    }
    const int64_t chunk = std::max<int64_t>(1, options.max_batch);
    std::vector<at::Tensor> parts;  // [<= chunk, E] each
    if (kind == Job::Kind::kText) {
      std::vector<std::string> texts;
      for (const auto& j : jobs) texts.insert(texts.end(), j->texts.begin(), j->texts.end());
      const int64_t N = static_cast<int64_t>(texts.size()), ctx = model.config.text_cfg().context_length();
      std::vector<int64_t> tokens;  // per text: start and end markers and what is between
      for (int64_t lo = 0; lo < N; lo += chunk) {
        const int64_t hi = std::min(N, lo + chunk);
        auto ids = tokenize(*model.tokenizer, std::vector<std::string>(texts.begin() + lo, texts.begin() + hi), ctx);  // [n, T]
        const auto eot = ids.eq(model.tokenizer->eot_id()).to(at::kInt).argmax(1) + 1;  // [n] the first end marker's position + 1
        for (int64_t i = 0; i < eot.size(0); ++i) tokens.push_back(eot[i].item<int64_t>());
        parts.push_back(model.model->encode_text(ids.to(model.model->device()), /*normalize=*/true).to(at::kCPU, at::kFloat));
        if (metrics) metrics->batch("text", hi - lo);
      }
      int64_t at_row = 0;
      for (const auto& j : jobs) {
        for (int64_t i = 0; i < j->count(); ++i) j->tokens += tokens[static_cast<size_t>(at_row + i)];
        at_row += j->count();
      }
    } else {
      std::vector<at::Tensor> images;
      for (const auto& j : jobs) images.push_back(j->images);
      const auto x = at::cat(images);  // [N, 3, S, S]
      for (int64_t lo = 0; lo < x.size(0); lo += chunk) {
        const auto part = x.slice(0, lo, std::min(x.size(0), lo + chunk)).to(model.model->device());
        parts.push_back(model.model->encode_image(part, /*normalize=*/true).to(at::kCPU, at::kFloat));
        if (metrics) metrics->batch("image", part.size(0));
      }
    }
    const at::Tensor all = at::cat(parts);  // [N, E]
    int64_t at_row = 0, k = 0;
    std::vector<at::Tensor> queries;
    for (const auto& j : jobs) {
      j->embeddings = all.slice(0, at_row, at_row + j->count());
      at_row += j->count();
      if (j->k > 0) {
        queries.push_back(j->embeddings);
        k = std::max(k, j->k);
      }
    }
    if (queries.empty()) return;
    // One search for every query of the batch: from kBlockedQueries on, each block of rows is
    // read once for all of them. A failure here fails the searches, not the embeddings.
    std::vector<std::vector<SearchHit>> hits;
    try {
      if (index.size() > 0) {
        index.check_intact();
        hits = index.search(at::cat(queries), std::min(k, index.size()), options.candidates, false, options.ann);
        index.check_intact();
      } else {
        hits.resize(static_cast<size_t>(at::cat(queries).size(0)));
      }
    } catch (...) {
      for (const auto& j : jobs)
        if (j->k > 0) j->error = std::current_exception();
      return;
    }
    size_t q = 0;
    for (const auto& j : jobs) {
      if (j->k <= 0) continue;
      for (int64_t i = 0; i < j->count(); ++i, ++q) {
        auto& h = hits[q];
        if (static_cast<int64_t>(h.size()) > j->k) h.resize(static_cast<size_t>(j->k));
        j->hits.push_back(std::move(h));
      }
    }
  }

  std::shared_ptr<Job> image_job(std::string_view bytes, int64_t k) {
    auto job = std::make_shared<Job>();
    job->kind = Job::Kind::kImage;
    job->images = preprocess(bytes).unsqueeze(0);  // [1, 3, S, S]
    job->k = k;
    return job;
  }

  /// [E, C] for a class list and templates, built on the worker and cached (64 lists at most).
  at::Tensor classifier(const std::vector<std::string>& classes, const std::vector<std::string>& templates) {
    std::string key;  // every part length-prefixed: no choice of names can make two lists one key
    for (const auto& c : classes) key += std::to_string(c.size()) + ':' + c;
    key += '|';
    for (const auto& t : templates) key += std::to_string(t.size()) + ':' + t;
    {
      std::lock_guard<std::mutex> lock(classifiers_mu);
      if (auto it = built.find(key); it != built.end()) return it->second;
    }
    auto job = std::make_shared<Job>();
    job->kind = Job::Kind::kTask;
    // The task owns its inputs and writes into its job: a request that times out and unwinds
    // leaves nothing the worker still reads or writes.
    job->task = [this, classes, templates](Job& self) {
      self.embeddings =
          zero_shot_classifier(model.model, *model.tokenizer, classes, templates, model.config.text_cfg().context_length()).cpu();
    };
    run(job);
    std::lock_guard<std::mutex> lock(classifiers_mu);
    if (built.size() >= 64) built.clear();
    built[key] = job->embeddings;
    return job->embeddings;
  }

  std::vector<float> probabilities(std::string_view image, const at::Tensor& weights) {  // weights [E, C]
    auto job = image_job(image, 0);
    run(job);
    auto probs = (100.0 * at::matmul(job->embeddings, weights.to(at::kFloat))).softmax(-1);  // [1, C]
    return rows_of(probs)[0];
  }
};

Engine::Engine(const std::string& model_dir, const std::string& index_path, const EngineOptions& options, Metrics* metrics)
    : impl_(std::make_unique<Impl>()) {
  auto& s = *impl_;
  s.options = options;
  s.metrics = metrics;
  s.index_path = index_path;
  s.index = ImageIndex::open(index_path);
  s.model = load_model_dir(model_dir, resolve_device(options.device, "--device"));
  s.model.model->eval();
  s.model_name = std::filesystem::path(model_dir).lexically_normal().filename().string();
  if (s.model_name.empty()) s.model_name = std::filesystem::path(model_dir).lexically_normal().parent_path().filename().string();
  check_index_model(s.index, index_path, s.model);
  s.resize = index_resize_mode(s.index, index_path);
  s.worker = std::thread([this] { impl_->loop(); });
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->worker.joinable()) impl_->worker.join();
}

std::vector<std::vector<Hit>> Engine::search_texts(const std::vector<std::string>& texts, int64_t k) {
  auto job = std::make_shared<Job>();
  job->texts = texts;
  job->k = k;
  impl_->run(job);
  std::vector<std::vector<Hit>> out;
  for (const auto& h : job->hits) out.push_back(hits_of(h));
  return out;
}

std::vector<Hit> Engine::search_image(std::string_view image, int64_t k) {
  auto job = impl_->image_job(image, k);
  impl_->run(job);
  return hits_of(job->hits.at(0));
}

Embedded Engine::embed_texts(const std::vector<std::string>& texts) {
  auto job = std::make_shared<Job>();
  job->texts = texts;
  impl_->run(job);
  return {rows_of(job->embeddings), job->tokens};
}

Embedded Engine::embed_images(const std::vector<std::string>& images) {
  std::vector<at::Tensor> x;
  for (const auto& b : images) x.push_back(impl_->preprocess(b));
  auto job = std::make_shared<Job>();
  job->kind = Job::Kind::kImage;
  job->images = at::stack(x);  // [n, 3, S, S]
  impl_->run(job);
  return {rows_of(job->embeddings), 0};
}

std::vector<float> Engine::zeroshot(std::string_view image, const std::vector<std::string>& classes,
                                    const std::vector<std::string>& templates) {
  return impl_->probabilities(image, impl_->classifier(classes, templates));
}

std::vector<float> Engine::zeroshot(std::string_view image, const std::string& classifier, std::vector<std::string>& classes) {
  at::Tensor w;
  {
    std::lock_guard<std::mutex> lock(impl_->classifiers_mu);
    auto it = impl_->saved.find(classifier);
    if (it == impl_->saved.end()) {
      std::string names;
      for (const auto& [n, c] : impl_->saved) names += (names.empty() ? "" : ", ") + n;
      throw RequestError(400, fmt::format("no classifier named '{}'; loaded: {}", classifier,
                                          names.empty() ? "none (serve --classifier NAME=FILE)" : names));
    }
    w = it->second.weights;
    classes = it->second.classes;
  }
  return impl_->probabilities(image, w);
}

void Engine::add_classifier(const std::string& name, const std::string& path) {
  auto c = ZeroShotClassifier::load(path, impl_->model.fingerprint);
  std::lock_guard<std::mutex> lock(impl_->classifiers_mu);
  impl_->saved[name] = std::move(c);
}

std::vector<std::string> Engine::classifier_names() const {
  std::lock_guard<std::mutex> lock(impl_->classifiers_mu);
  std::vector<std::string> out;
  for (const auto& [n, c] : impl_->saved) out.push_back(n);
  return out;
}

std::string Engine::thumbnail_jpeg(int64_t row, int size) const {
  const auto& index = impl_->index;
  if (row < 0 || row >= index.size()) throw RequestError(404, fmt::format("no row {} in the index ({} rows)", row, index.size()));
  if (index.stats[row][0].item<int64_t>() < 0)
    throw RequestError(404, fmt::format("row {} is not a file ({}): only indexed files have thumbnails", row, index.paths[row]));
  std::string bytes;
  try {
    bytes = read_file(index.paths[row]);
  } catch (const std::exception& e) {
    throw RequestError(404, fmt::format("row {}: the indexed file cannot be read now: {}", row, e.what()));
  }
  cv::Mat bgr;
  try {
    bgr = data::decode_image(bytes, impl_->options.max_image_pixels);
  } catch (const data::SampleError& e) {
    throw RequestError(404, fmt::format("row {}: the indexed file is no longer a usable image ({})", row, e.reason));
  }
  const double scale = static_cast<double>(size) / std::max(bgr.cols, bgr.rows);
  if (scale < 1) cv::resize(bgr, bgr, cv::Size(), scale, scale, cv::INTER_AREA);
  std::vector<uchar> out;
  cv::imencode(".jpg", bgr, out, {cv::IMWRITE_JPEG_QUALITY, 85});
  return std::string(out.begin(), out.end());
}

int64_t Engine::size() const { return impl_->index.size(); }
int64_t Engine::dim() const { return impl_->index.embeddings.size(1); }
const std::string& Engine::path(int64_t row) const { return impl_->index.paths.at(static_cast<size_t>(row)); }
const std::string& Engine::model_name() const { return impl_->model_name; }
const std::string& Engine::index_path() const { return impl_->index_path; }

}  // namespace torchclip::serve
