// What `torchclip serve` computes, behind the HTTP layer: a model and a memory-mapped image
// index, and one worker thread that owns the towers. Requests from many HTTP threads queue their
// texts (or images); the worker waits a short, configurable time for more, embeds everything
// queued in one tower call, runs one batched search over the index and hands each request its
// rows. No torch type crosses this header (search/ann_options.h is plain structs),
// so the HTTP code compiles without LibTorch's tensor headers.
#pragma once

#include "search/ann_options.h"
#include "serve/metrics.h"

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace torchclip::serve {

/// A request the server refuses or cannot answer: the HTTP status and a message for the client.
class RequestError : public std::runtime_error {
 public:
  RequestError(int status, const std::string& what) : std::runtime_error(what), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

struct EngineOptions {
  double batch_wait_ms = 2;         // how long the worker waits for more requests to batch with the first
  int64_t max_batch = 64;           // inputs per tower call (a larger request is embedded in several)
  int64_t candidates = 0;           // int8 and FAISS ivf-pq indexes: rows reranked exactly per query (0: 100, 400)
  AnnSearchOptions ann;             // FAISS indexes: nprobe, ef_search
  double request_timeout_s = 30;    // a request still queued or running after this gets 503 (its work, once started, runs on)
  int64_t max_image_pixels = 40'000'000;  // width x height of an uploaded image (read from its header)
  std::string device = "cpu";       // where the towers run
};

struct Hit {
  int64_t row = 0;  // the index row: path(row), and the thumbnail's id
  float score = 0;  // cosine similarity
};

struct Embedded {
  std::vector<std::vector<float>> embeddings;  // [n][E], L2-normalised
  int64_t tokens = 0;                          // text tokens embedded (start and end markers included)
};

class Engine {
 public:
  /// Loads the model folder and memory-maps the index; an index built by another model is
  /// refused, naming both fingerprints. `metrics` (may be null) receives the batch sizes.
  Engine(const std::string& model_dir, const std::string& index_path, const EngineOptions& options, Metrics* metrics);
  /// Finishes every queued request, then stops the worker.
  ~Engine();

  /// Top k rows for each text, best first; concurrent calls share tower calls and searches.
  std::vector<std::vector<Hit>> search_texts(const std::vector<std::string>& texts, int64_t k);
  /// Top k rows for an encoded image (JPEG, PNG, WebP or BMP bytes).
  std::vector<Hit> search_image(std::string_view image, int64_t k);
  Embedded embed_texts(const std::vector<std::string>& texts);
  Embedded embed_images(const std::vector<std::string>& images);
  /// Class probabilities for an image: softmax of 100 x cosine similarity, as `torchclip zeroshot`,
  /// over the classifier built from `classes` x `templates` (cached for repeated class lists)...
  std::vector<float> zeroshot(std::string_view image, const std::vector<std::string>& classes,
                              const std::vector<std::string>& templates);
  /// ...or over a classifier loaded with add_classifier; its class names go to `classes`.
  std::vector<float> zeroshot(std::string_view image, const std::string& classifier, std::vector<std::string>& classes);
  /// Loads a classifier saved by `torchclip zeroshot --save-classifier` under `name`; refused
  /// when another model built it.
  void add_classifier(const std::string& name, const std::string& path);
  std::vector<std::string> classifier_names() const;

  /// A JPEG of the image at `row`, at most `size` pixels on its longer side. Only indexed files
  /// can be read: a row out of range or one from a tar shard is RequestError 404.
  std::string thumbnail_jpeg(int64_t row, int size) const;

  int64_t size() const;  // index rows
  int64_t dim() const;
  const std::string& path(int64_t row) const;
  const std::string& model_name() const;  // the model folder's name (no path)
  const std::string& index_path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace torchclip::serve
