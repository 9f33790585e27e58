// torchclip serve: the retrieval service (HTTP API and search page) over an index, and
// torchclip bench serve, its load test.
#include "io/fsutil.h"
#include "serve/engine.h"
#include "serve/load.h"
#include "serve/server.h"
#include "subcommands.h"

#include <fmt/format.h>
#include <pthread.h>
#include <sys/stat.h>

#include <atomic>
#include <csignal>
#include <thread>

namespace torchclip::tools {

namespace {

bool is_loopback(const std::string& host) { return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0; }

/// The key in FILE (surrounding whitespace trimmed); a missing, empty or world-readable file is an error.
std::string read_api_key(const std::string& path) {
  if (const std::string problem = file_problem(path); !problem.empty())
    throw UsageError(fmt::format("--api-key-file '{}': {}", path, problem));
  std::string key = read_file(path);
  const auto first = key.find_first_not_of(" \t\r\n"), last = key.find_last_not_of(" \t\r\n");
  key = first == std::string::npos ? "" : key.substr(first, last - first + 1);
  if (key.empty()) throw UsageError(fmt::format("--api-key-file '{}': the file is empty", path));
  if (key.find_first_of(" \t\r\n") != std::string::npos)
    throw UsageError(fmt::format("--api-key-file '{}': the key must be one line without spaces", path));
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & S_IROTH))
    fmt::print(stderr, "serve: warning: {} is readable by every user of this machine (chmod 600 it)\n", path);
  return key;
}

}  // namespace

int serve_main(const Argv& argv) {
  Args args(argv);
  const std::string model_dir = args.require("model"), index_path = args.require("index");
  serve::ServerOptions so;
  serve::EngineOptions eo;
  so.host = args.get("host", so.host);
  so.port = static_cast<int>(args.get_int("port", so.port, 0, 65535));
  const std::string key_file = args.get("api-key-file", "");
  so.threads = static_cast<int>(args.get_int("threads", so.threads, 1, 1024));
  so.max_body_bytes = args.get_int("max-body-mb", so.max_body_bytes >> 20, 1, 4096) << 20;
  so.max_k = args.get_int("max-k", so.max_k, 1, 1000000);
  so.max_query_chars = args.get_int("max-query-chars", so.max_query_chars, 1, 1 << 20);
  so.max_inputs = args.get_int("max-inputs", so.max_inputs, 1, 65536);
  eo.batch_wait_ms = args.get_double("batch-wait-ms", eo.batch_wait_ms);
  eo.max_batch = args.get_int("max-batch", eo.max_batch, 1, 65536);
  eo.candidates = args.get_int("candidates", eo.candidates, 1, 1000000);
  eo.request_timeout_s = args.get_double("request-timeout", eo.request_timeout_s);
  eo.max_image_pixels = static_cast<int64_t>(args.get_double("max-image-mpixels", eo.max_image_pixels / 1e6) * 1e6);
  eo.device = args.get("device", "auto");
  const auto classifiers = args.get_all("classifier");
  args.finish();
  if (eo.batch_wait_ms < 0 || eo.batch_wait_ms > 10000) throw UsageError("--batch-wait-ms must be from 0 to 10000");
  if (!(eo.request_timeout_s > 0) || eo.request_timeout_s > 3600) throw UsageError("--request-timeout must be from 0 to 3600 seconds");
  if (!(eo.max_image_pixels >= 1)) throw UsageError("--max-image-mpixels must be positive");
  for (const auto& c : classifiers)
    if (c.find('=') == std::string::npos || c.front() == '=') throw UsageError(fmt::format("--classifier '{}': give NAME=FILE", c));
  if (!key_file.empty()) so.api_key = read_api_key(key_file);
  if (!is_loopback(so.host) && so.api_key.empty())
    fmt::print(stderr, "serve: warning: listening on {} without --api-key-file: anyone who can reach this address can "
               "search the index and read its thumbnails\n", so.host);

  // SIGTERM and SIGINT are taken by one thread (sigwait) that stops the server; blocked here,
  // before any thread starts, so every thread inherits the mask and none is interrupted.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  serve::Metrics metrics;
  serve::Engine engine(model_dir, index_path, eo, &metrics);
  for (const auto& c : classifiers) engine.add_classifier(c.substr(0, c.find('=')), c.substr(c.find('=') + 1));
  serve::Server server(engine, metrics, so);
  const int port = server.bind();
  std::atomic<bool> signalled{false};
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    signalled = true;
    fmt::print(stderr, "serve: {} received: finishing the requests in flight, then exiting\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    server.stop();
  });
  fmt::print(stderr, "serve: {} images from {} with model {}: listening on http://{}:{}/ (auth: {})\n", engine.size(), index_path,
             model_dir, so.host, port, so.api_key.empty() ? "none" : "Bearer key");
  server.listen();
  if (!signalled) pthread_kill(waiter.native_handle(), SIGTERM);  // listen failed: wake the waiter
  waiter.join();
  fmt::print(stderr, "serve: stopped\n");
  return 0;
}

int bench_serve_main(Args& args) {
  serve::LoadOptions o;
  o.url = args.get("url", o.url);
  o.clients = static_cast<int>(args.get_int("clients", o.clients, 1, 1024));
  o.seconds = args.get_double("seconds", o.seconds);
  o.warmup_seconds = args.get_double("warmup", o.warmup_seconds);
  o.k = args.get_int("k", o.k, 1, 1000000);
  const std::string key_file = args.get("api-key-file", ""), queries = args.get("queries", "");
  const bool json = args.flag("json");
  args.finish();
  if (!(o.seconds > 0) || o.seconds > 3600) throw UsageError("--seconds must be from 0 to 3600");
  if (!(o.warmup_seconds >= 0) || o.warmup_seconds > 600) throw UsageError("--warmup must be from 0 to 600 seconds");
  if (!key_file.empty()) o.api_key = read_api_key(key_file);
  if (!queries.empty()) {
    o.queries = read_lines(queries);
    if (o.queries.empty()) throw UsageError(fmt::format("--queries '{}': no queries (one per line)", queries));
  }
  o.progress = !json;
  const auto r = serve::run_load(o);
  fmt::print("{}\n", json ? r.to_json() : r.to_text());
  return 0;
}

}  // namespace torchclip::tools
