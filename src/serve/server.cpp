#include "serve/server.h"

#include "util/base64.h"
#include "util/json.h"
#include "util/json_value.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <httplib.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <set>
#include <strings.h>

namespace torchclip::serve {

namespace {

using Clock = std::chrono::steady_clock;

const char* kRoutes = "POST /v1/search, POST /v1/embeddings, POST /v1/zeroshot, GET /v1/thumbnail/ROW, GET /health, GET /metrics, GET /";

const char* error_type(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 503: return "overloaded_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

void send_error(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  res.set_content(fmt::format("{{\"error\": {{\"message\": {}, \"type\": \"{}\", \"code\": {}}}}}\n", json_quote(message),
                              error_type(status), status),
                  "application/json");
}

/// The route a request counts under in /metrics: a fixed set, so a client cannot grow it.
std::string route_label(const std::string& path) {
  static const std::set<std::string> kKnown = {"/", "/health", "/metrics", "/v1/search", "/v1/embeddings", "/v1/zeroshot"};
  if (kKnown.count(path)) return path;
  if (path.rfind("/v1/thumbnail/", 0) == 0) return "/v1/thumbnail";
  return "other";
}

/// Compares a presented key with the expected one in time that depends only on the presented
/// key's length, so timing does not reveal how much of a guess was right.
bool same_key(const std::string& expected, const std::string& given) {
  if (expected.empty()) return false;
  unsigned char diff = expected.size() == given.size() ? 0 : 1;
  for (size_t i = 0; i < given.size(); ++i) diff |= static_cast<unsigned char>(expected[i % expected.size()] ^ given[i]);
  return diff == 0;
}

}  // namespace

bool is_loopback(const std::string& host) { return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0; }

namespace {

/// A Host header naming this machine's loopback: 127.x.y.z, localhost or [::1], with any port.
bool loopback_host(const std::string& host_header) {
  std::string h = host_header;
  if (!h.empty() && h.front() == '[') h = h.substr(1, h.find(']') == std::string::npos ? std::string::npos : h.find(']') - 1);
  else if (const size_t colon = h.rfind(':'); colon != std::string::npos) h = h.substr(0, colon);
  return is_loopback(h);
}

/// Request bodies: a JSON object whose keys are all among `valid`.
JsonValue parse_object(const httplib::Request& req, std::initializer_list<const char*> valid) {
  if (req.body.empty()) throw RequestError(400, "the request has no body; send a JSON object");
  JsonValue body;
  try {
    body = JsonValue::parse(req.body, 64, 100000);  // depth and values: a body cannot become gigabytes of values
  } catch (const JsonError& e) {
    throw RequestError(400, e.what());
  }
  if (!body.is_object()) throw RequestError(400, fmt::format("the body must be a JSON object, not {}", body.type_name()));
  for (const auto& key : body.keys()) {
    bool known = false;
    for (const char* v : valid) known = known || key == v;
    if (!known) throw RequestError(400, fmt::format("unknown field \"{}\"; valid fields: {}", key, fmt::join(valid, ", ")));
  }
  return body;
}

struct Limits {
  const ServerOptions& o;

  int64_t k(const JsonValue& body) const {
    const JsonValue* v = body.find("k");
    if (!v) return std::min<int64_t>(10, o.max_k);
    if (!v->is_number() || !(v->number() >= 1 && v->number() <= static_cast<double>(o.max_k)) ||
        v->number() != std::floor(v->number()))
      throw RequestError(400, fmt::format("\"k\" must be an integer from 1 to {} (--max-k)", o.max_k));
    return static_cast<int64_t>(v->number());
  }
  const std::string& text(const JsonValue& v, const std::string& what) const {
    if (!v.is_string()) throw RequestError(400, fmt::format("{} must be a string, not {}", what, v.type_name()));
    if (v.string().empty()) throw RequestError(400, fmt::format("{} is empty", what));
    if (static_cast<int64_t>(v.string().size()) > o.max_query_chars)
      throw RequestError(413, fmt::format("{} is {} bytes; the limit is {} (--max-query-chars)", what, v.string().size(),
                                          o.max_query_chars));
    return v.string();
  }
  std::vector<std::string> texts(const JsonValue& v, const std::string& what) const {
    if (!v.is_array()) throw RequestError(400, fmt::format("{} must be an array of strings, not {}", what, v.type_name()));
    count(v.items().size(), what);
    std::vector<std::string> out;
    for (size_t i = 0; i < v.items().size(); ++i) out.push_back(text(v.items()[i], fmt::format("{}[{}]", what, i)));
    return out;
  }
  void count(size_t n, const std::string& what) const {
    if (n == 0) throw RequestError(400, fmt::format("{} is empty", what));
    if (static_cast<int64_t>(n) > o.max_inputs)
      throw RequestError(413, fmt::format("{} has {} items; the limit is {} (--max-inputs)", what, n, o.max_inputs));
  }
};

/// The bytes of a base64 image (a data: URL's prefix is allowed).
std::string image_bytes(const JsonValue& v, const std::string& what) {
  if (!v.is_string()) throw RequestError(400, fmt::format("{} must be a base64 string, not {}", what, v.type_name()));
  std::string_view s = v.string();
  if (s.rfind("data:", 0) == 0) {
    const size_t comma = s.find(',');
    if (comma == std::string_view::npos) throw RequestError(400, fmt::format("{}: a data: URL without ','", what));
    s.remove_prefix(comma + 1);
  }
  try {
    std::string bytes = base64_decode(s);
    if (bytes.empty()) throw RequestError(400, fmt::format("{} is empty", what));
    return bytes;
  } catch (const std::invalid_argument& e) {
    throw RequestError(400, fmt::format("{}: {}", what, e.what()));
  }
}

std::string hits_json(const Engine& engine, const std::string& query, const std::vector<Hit>& hits) {
  std::vector<std::string> rows;
  rows.reserve(hits.size());
  for (size_t r = 0; r < hits.size(); ++r)
    rows.push_back(fmt::format("{{\"rank\": {}, \"score\": {}, \"id\": {}, \"path\": {}}}", r + 1, json_float(hits[r].score),
                               hits[r].row, json_quote(engine.path(hits[r].row))));
  return fmt::format("{{\"query\": {}, \"hits\": [{}]}}", json_quote(query), fmt::join(rows, ", "));
}

std::string floats_json(const std::vector<float>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i)  // shortest round-trip; JSON has no NaN
    out += (i ? "," : "") + (std::isfinite(v[i]) ? fmt::format("{}", v[i]) : std::string("null"));
  return out + "]";
}

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

thread_local Clock::time_point t_started;
thread_local bool t_counted = false;

}  // namespace

struct Server::Impl {
  Engine& engine;
  Metrics& metrics;
  ServerOptions options;
  bool loopback_only;
  httplib::Server http;

  Impl(Engine& e, Metrics& m, const ServerOptions& o) : engine(e), metrics(m), options(o), loopback_only(is_loopback(o.host)) {}

  /// Whether the request may use the API (always, without a key). Requests with a body are
  /// checked here, in the route, after httplib has read the body: refused in pre-routing, the
  /// unread body would be parsed as the next request on the keep-alive connection.
  bool authorized(const httplib::Request& req, httplib::Response& res) const {
    if (options.api_key.empty()) return true;
    const std::string auth = req.get_header_value("Authorization");
    // The scheme is case-insensitive (RFC 7235); the key is not.
    if (auth.size() > 7 && strncasecmp(auth.c_str(), "Bearer ", 7) == 0 && same_key(options.api_key, auth.substr(7))) return true;
    send_error(res, 401, auth.empty() ? "this server needs an API key: send 'Authorization: Bearer KEY'" : "the API key is not valid");
    res.set_header("WWW-Authenticate", "Bearer");
    return false;
  }

  /// Runs a route's body; RequestError and malformed input become JSON errors, anything else 500.
  template <typename Fn>
  void guarded(httplib::Response& res, Fn&& fn) {
    try {
      fn();
    } catch (const RequestError& e) {
      send_error(res, e.status(), e.what());
    } catch (const std::invalid_argument& e) {
      send_error(res, 400, e.what());
    } catch (const std::exception& e) {  // details (a LibTorch error carries a backtrace) stay in the server's log
      fmt::print(stderr, "serve: internal error: {}\n", e.what());
      send_error(res, 500, "internal error; the server's log has the details");
    }
  }

  void search(const httplib::Request& req, httplib::Response& res) {
    const auto t0 = Clock::now();
    const Limits limits{options};
    const JsonValue body = parse_object(req, {"query", "queries", "image", "k"});
    const int64_t k = limits.k(body);
    const JsonValue *query = body.find("query"), *queries = body.find("queries"), *image = body.find("image");
    if ((query != nullptr) + (queries != nullptr) + (image != nullptr) != 1)
      throw RequestError(400, "give exactly one of \"query\" (a string), \"queries\" (an array of strings), \"image\" (base64)");
    std::vector<std::string> labels;
    std::vector<std::vector<Hit>> hits;
    if (image) {
      hits.push_back(engine.search_image(image_bytes(*image, "\"image\""), k));
      labels.push_back("image");
    } else {
      labels = query ? std::vector<std::string>{limits.text(*query, "\"query\"")} : limits.texts(*queries, "\"queries\"");
      hits = engine.search_texts(labels, k);
    }
    std::vector<std::string> results;
    for (size_t i = 0; i < hits.size(); ++i) results.push_back(hits_json(engine, labels[i], hits[i]));
    res.set_content(fmt::format("{{\"object\": \"search\", \"model\": {}, \"index_rows\": {}, \"k\": {}, \"took_ms\": {:.3f}, "
                                "\"results\": [{}]}}\n",
                                json_quote(engine.model_name()), engine.size(), k, ms_since(t0), fmt::join(results, ", ")),
                    "application/json");
  }

  void embeddings(const httplib::Request& req, httplib::Response& res) {
    const Limits limits{options};
    // "model", "encoding_format", "dimensions" and "user" are what OpenAI's clients send.
    const JsonValue body = parse_object(req, {"input", "model", "encoding_format", "dimensions", "user"});
    const JsonValue* input = body.find("input");
    if (!input) throw RequestError(400, "missing \"input\": a string, or an array of strings and {\"image\": base64} objects");
    std::string format = "float";
    if (const JsonValue* f = body.find("encoding_format")) {
      if (!f->is_string() || (f->string() != "float" && f->string() != "base64"))
        throw RequestError(400, "\"encoding_format\" must be \"float\" or \"base64\"");
      format = f->string();
    }
    if (const JsonValue* d = body.find("dimensions"); d && (!d->is_number() || d->number() != static_cast<double>(engine.dim())))
      throw RequestError(400, fmt::format("\"dimensions\": this model's embeddings have {} (they cannot be shortened)", engine.dim()));
    // Texts and images, in input order; each kind embedded in one batch.
    std::vector<const JsonValue*> items;
    if (input->is_array()) {
      limits.count(input->items().size(), "\"input\"");
      for (const auto& v : input->items()) items.push_back(&v);
    } else {
      items.push_back(input);
    }
    std::vector<std::string> texts, images;
    std::vector<std::pair<bool, size_t>> where;  // (is image, position in its list)
    for (size_t i = 0; i < items.size(); ++i) {
      const std::string what = input->is_array() ? fmt::format("\"input\"[{}]", i) : "\"input\"";
      if (items[i]->is_object()) {
        const JsonValue* img = items[i]->find("image");
        if (!img || items[i]->keys().size() != 1) throw RequestError(400, fmt::format("{}: an object must be {{\"image\": base64}}", what));
        where.push_back({true, images.size()});
        images.push_back(image_bytes(*img, what + ".image"));
      } else {
        where.push_back({false, texts.size()});
        texts.push_back(limits.text(*items[i], what));
      }
    }
    Embedded t, im;
    if (!texts.empty()) t = engine.embed_texts(texts);
    if (!images.empty()) im = engine.embed_images(images);
    std::vector<std::string> data;
    for (size_t i = 0; i < where.size(); ++i) {
      const auto& e = where[i].first ? im.embeddings[where[i].second] : t.embeddings[where[i].second];
      const std::string value =
          format == "float" ? floats_json(e)
                            : json_quote(base64_encode(std::string_view(reinterpret_cast<const char*>(e.data()), e.size() * sizeof(float))));
      data.push_back(fmt::format("{{\"object\": \"embedding\", \"index\": {}, \"embedding\": {}}}", i, value));
    }
    res.set_content(fmt::format("{{\"object\": \"list\", \"data\": [{}], \"model\": {}, \"usage\": {{\"prompt_tokens\": {}, "
                                "\"total_tokens\": {}}}}}\n",
                                fmt::join(data, ", "), json_quote(engine.model_name()), t.tokens, t.tokens),
                    "application/json");
  }

  void zeroshot(const httplib::Request& req, httplib::Response& res) {
    const Limits limits{options};
    const JsonValue body = parse_object(req, {"image", "classes", "templates", "classifier"});
    const JsonValue *image = body.find("image"), *classes = body.find("classes"), *templates = body.find("templates"),
                    *classifier = body.find("classifier");
    if (!image) throw RequestError(400, "missing \"image\" (base64)");
    if ((classes != nullptr) == (classifier != nullptr))
      throw RequestError(400, "give \"classes\" (an array of names, with optional \"templates\") or \"classifier\" (a loaded name)");
    if (classifier && templates) throw RequestError(400, "\"templates\" goes with \"classes\"; a saved classifier has its own");
    const std::string bytes = image_bytes(*image, "\"image\"");
    std::vector<std::string> names;
    std::vector<float> probs;
    if (classifier) {
      probs = engine.zeroshot(bytes, limits.text(*classifier, "\"classifier\""), names);
    } else {
      names = limits.texts(*classes, "\"classes\"");
      std::vector<std::string> t = templates ? limits.texts(*templates, "\"templates\"") : std::vector<std::string>{"a photo of a {}."};
      for (size_t i = 0; i < t.size(); ++i)
        if (t[i].find("{}") == std::string::npos)
          throw RequestError(400, fmt::format("\"templates\"[{}] has no {{}} where the class name goes", i));
      if (static_cast<int64_t>(names.size() * t.size()) > 16 * options.max_inputs)
        throw RequestError(413, fmt::format("{} classes x {} templates is {} prompts; the limit is {} (16 x --max-inputs): save a "
                                            "classifier with torchclip zeroshot --save-classifier and serve it with --classifier",
                                            names.size(), t.size(), names.size() * t.size(), 16 * options.max_inputs));
      probs = engine.zeroshot(bytes, names, t);
    }
    if (probs.size() != names.size())
      throw std::runtime_error(fmt::format("zero-shot gave {} probabilities for {} classes", probs.size(), names.size()));
    std::vector<size_t> order(names.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return probs[a] > probs[b]; });
    std::vector<std::string> rows;
    for (size_t i : order) rows.push_back(fmt::format("{{\"class\": {}, \"prob\": {}}}", json_quote(names[i]), json_float(probs[i])));
    res.set_content(fmt::format("{{\"object\": \"zeroshot\", \"top\": {}, \"classes\": [{}]}}\n", json_quote(names[order[0]]),
                                fmt::join(rows, ", ")),
                    "application/json");
  }

  void routes() {
    http.Get("/", [](const httplib::Request&, httplib::Response& res) { res.set_content(search_page_html(), "text/html; charset=utf-8"); });
    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(fmt::format("{{\"status\": \"ok\", \"images\": {}, \"dim\": {}, \"model\": {}, \"auth_required\": {}}}\n",
                                  engine.size(), engine.dim(), json_quote(engine.model_name()), options.api_key.empty() ? "false" : "true"),
                      "application/json");
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics.render({{"torchclip_index_rows", static_cast<double>(engine.size())}}), "text/plain; version=0.0.4");
    });
    http.Get(R"(/v1/thumbnail/(\d{1,18}))", [this](const httplib::Request& req, httplib::Response& res) {
      guarded(res, [&] {
        res.set_content(engine.thumbnail_jpeg(std::stoll(req.matches[1].str()), static_cast<int>(options.thumbnail_size)), "image/jpeg");
        res.set_header("Cache-Control", "private, max-age=3600");
      });
    });
    http.Post("/v1/search", [this](const httplib::Request& req, httplib::Response& res) {
      if (authorized(req, res)) guarded(res, [&] { search(req, res); });
    });
    http.Post("/v1/embeddings", [this](const httplib::Request& req, httplib::Response& res) {
      if (authorized(req, res)) guarded(res, [&] { embeddings(req, res); });
    });
    http.Post("/v1/zeroshot", [this](const httplib::Request& req, httplib::Response& res) {
      if (authorized(req, res)) guarded(res, [&] { zeroshot(req, res); });
    });
  }

  void hooks() {
    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      t_started = Clock::now();
      t_counted = true;
      ++metrics.in_flight;
      // Bound to loopback without a key, only requests addressed to this machine by name are
      // answered: a web page whose name a DNS rebinding points at 127.0.0.1 sends its own name.
      if (options.api_key.empty() && loopback_only && !loopback_host(req.get_header_value("Host"))) {
        send_error(res, 403, fmt::format("Host '{}' is not this server's address; use http://127.0.0.1:PORT or localhost, or "
                                         "serve with --api-key-file",
                                         req.get_header_value("Host")));
        return httplib::Server::HandlerResponse::Handled;
      }
      // GET routes carry no body: their key is checked here (POST routes check it after reading theirs).
      if ((req.method == "GET" || req.method == "HEAD") && req.path != "/health" && req.path != "/" && !authorized(req, res))
        return httplib::Server::HandlerResponse::Handled;
      return httplib::Server::HandlerResponse::Unhandled;
    });
    // Errors httplib answers itself (no route, a body over the limit, a request it cannot parse)
    // get the same JSON shape as the routes' own.
    http.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      if (res.status == 404) send_error(res, 404, fmt::format("no route {} {}; routes: {}", req.method, req.path, kRoutes));
      else if (res.status == 413) send_error(res, 413, fmt::format("the body is larger than {} bytes (--max-body-mb)", options.max_body_bytes));
      else send_error(res, res.status, fmt::format("HTTP {}", res.status));
    });
    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      const double seconds = t_counted ? std::chrono::duration<double>(Clock::now() - t_started).count() : 0.0;
      metrics.request(route_label(req.path), res.status, seconds);
      if (t_counted) --metrics.in_flight;
      t_counted = false;
    });
  }
};

Server::Server(Engine& engine, Metrics& metrics, const ServerOptions& options)
    : impl_(std::make_unique<Impl>(engine, metrics, options)) {
  auto& http = impl_->http;
  const int threads = std::max(1, options.threads);
  http.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  http.set_payload_max_length(static_cast<size_t>(options.max_body_bytes));
  const auto io = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::duration<double>(options.io_timeout_s));
  http.set_read_timeout(io.count() / 1000000, io.count() % 1000000);
  http.set_write_timeout(io.count() / 1000000, io.count() % 1000000);
  http.set_keep_alive_timeout(2);
  // Headers and body go out in separate writes: with Nagle's algorithm the body waits for the
  // client's delayed ACK (40 ms on Linux) on every keep-alive request.
  http.set_tcp_nodelay(true);  // an idle keep-alive connection delays shutdown by at most this
  impl_->routes();
  impl_->hooks();
}

Server::~Server() = default;

int Server::bind() {
  auto& o = impl_->options;
  // httplib's own socket options add SO_REUSEPORT, which lets a second server bind the same port
  // and take half its connections; SO_REUSEADDR alone restarts cleanly after TIME_WAIT and makes
  // a busy port an error. The socket is kept to widen httplib 0.11's listen backlog of 5, which
  // drops the SYNs of a burst of new clients (each then waits a 1 s retransmit).
  auto socket_fd = std::make_shared<int>(-1);
  impl_->http.set_socket_options([socket_fd](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    *socket_fd = sock;
  });
  const int port = o.port == 0 ? impl_->http.bind_to_any_port(o.host) : (impl_->http.bind_to_port(o.host, o.port) ? o.port : -1);
  if (port > 0 && *socket_fd >= 0) ::listen(*socket_fd, SOMAXCONN);  // Linux: a second listen() sets the backlog
  if (port <= 0)
    throw std::runtime_error(fmt::format("cannot listen on {}:{} ({}): another process may hold the port, or the address is "
                                         "not this machine's",
                                         o.host, o.port, std::strerror(errno)));
  return port;
}

void Server::listen() { impl_->http.listen_after_bind(); }

void Server::stop() { impl_->http.stop(); }

}  // namespace torchclip::serve
