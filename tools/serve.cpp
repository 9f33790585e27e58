// torchclip serve: the retrieval service (HTTP API and search page) over an index, and
// torchclip bench serve, its load test.
#include "io/fsutil.h"
#include "serve/engine.h"
#include "serve/load.h"
#include "serve/server.h"
#include "subcommands.h"

#include <fmt/format.h>
#include <unistd.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <thread>

namespace torchclip::tools {

namespace {

int g_signal_pipe[2] = {-1, -1};
std::atomic<int> g_signals{0};

void on_stop_signal(int sig) {
  if (g_signals.fetch_add(1) > 0) {  // the second: the default action, now
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  const unsigned char s = static_cast<unsigned char>(sig);
  if (::write(g_signal_pipe[1], &s, 1) < 0) {
  }
}

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
  eo.candidates = args.get_int("candidates", eo.candidates, 0, 1000000);
  eo.ann.nprobe(args.get_int("nprobe", 0, 0, 1 << 24)).ef_search(args.get_int("ef-search", 0, 0, 1 << 20));
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
  if (!serve::is_loopback(so.host) && so.api_key.empty())
    fmt::print(stderr, "serve: warning: listening on {} without --api-key-file: anyone who can reach this address can "
               "search the index and read its thumbnails\n", so.host);

  // SIGTERM and SIGINT: the handler only writes the signal to a pipe (all it may do there); a
  // thread reading the pipe stops the server. A mask would not do: libraries start threads
  // before main (OpenBLAS's pool), and a signal delivered to one of them would kill the process.
  // A second signal ends the process at once.
  if (::pipe(g_signal_pipe) != 0) throw std::runtime_error(fmt::format("serve: pipe: {}", std::strerror(errno)));
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  fmt::print(stderr, "serve: loading {} and {}\n", model_dir, index_path);

  serve::Metrics metrics;
  serve::Engine engine(model_dir, index_path, eo, &metrics);
  for (const auto& c : classifiers) engine.add_classifier(c.substr(0, c.find('=')), c.substr(c.find('=') + 1));
  serve::Server server(engine, metrics, so);
  const int port = server.bind();
  std::atomic<bool> listening_ended{false};
  std::thread waiter([&] {
    unsigned char sig = 0;
    while (::read(g_signal_pipe[0], &sig, 1) < 0 && errno == EINTR) {
    }
    if (sig == 0) return;  // woken by the main thread: listen() returned without a signal
    fmt::print(stderr, "serve: {} received: finishing the requests in flight, then exiting (again: exit now)\n",
               sig == SIGTERM ? "SIGTERM" : "SIGINT");
    // stop() does nothing until listen() runs: a signal that arrived while the model loaded is
    // here already, so ask until listen() has returned.
    while (!listening_ended) {
      server.stop();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  fmt::print(stderr, "serve: {} images from {} with model {}: listening on http://{}:{}/ (auth: {})\n", engine.size(), index_path,
             model_dir, so.host, port, so.api_key.empty() ? "none" : "Bearer key");
  server.listen();
  listening_ended = true;
  const unsigned char wake = 0;
  if (::write(g_signal_pipe[1], &wake, 1) < 0) {
  }  // the waiter has a signal already (and exits), or reads this and exits
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
