// `torchclip serve`: the HTTP API and search page over an Engine, on cpp-httplib.
//
//   POST /v1/search       {"query": "a dog", "k": 10} | {"queries": [...]} | {"image": BASE64}
//   POST /v1/embeddings   {"input": "text" | ["text", {"image": BASE64}, ...]}  (OpenAI's shape)
//   POST /v1/zeroshot     {"image": BASE64, "classes": [...], "templates": [...]} | {"image", "classifier": NAME}
//   GET  /v1/thumbnail/ROW  a JPEG of an indexed file (no other file can be read)
//   GET  /health, GET /metrics (Prometheus text), GET / (the search page)
//
// With an API key every route but /health and the page itself (static HTML that holds no data;
// it sends the key with each of its requests) needs `Authorization: Bearer KEY`; without one, a
// server bound to loopback answers only requests whose Host names loopback (DNS rebinding).
// Every error is a JSON body {"error": {"message", "type", "code"}} with a 4xx/5xx status; the
// server stays up.
#pragma once

#include "serve/engine.h"
#include "serve/metrics.h"

#include <memory>
#include <string>

namespace torchclip::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;               // 0: any free port (bind() returns it)
  std::string api_key;           // empty: no authentication
  int threads = 8;               // HTTP worker threads (concurrent connections served)
  int64_t max_body_bytes = 32 << 20;
  int64_t max_k = 1000;
  int64_t max_query_chars = 2000;  // bytes of one text
  int64_t max_inputs = 256;        // texts or images in one request
  int64_t thumbnail_size = 256;
  double io_timeout_s = 10;        // reading a request, writing a response
};

class Server {
 public:
  Server(Engine& engine, Metrics& metrics, const ServerOptions& options);
  ~Server();
  /// Binds host:port; returns the port (the chosen one for port 0). Throws naming host:port.
  int bind();
  /// Serves until stop(); returns once the requests being handled are answered (connections
  /// still waiting for a free HTTP thread are closed unanswered).
  void listen();
  /// From any thread (a signal-waiting one): stop accepting, let in-flight requests finish.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// 127.x.y.z, localhost or ::1.
bool is_loopback(const std::string& host);

/// The search page served at GET /.
const char* search_page_html();

}  // namespace torchclip::serve
