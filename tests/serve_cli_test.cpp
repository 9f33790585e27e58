// `torchclip serve` as a process on 127.0.0.1, from a real HTTP client (cpp-httplib's): the API
// answers as the command-line tools do, bad requests get JSON errors and leave the server up,
// concurrent queries are batched and equal one at a time, an API key guards the routes, SIGTERM
// finishes in-flight requests, the page works in headless Chromium (Selenium), and a load test
// has no errors and no memory growth. Every wait is bounded.
#include "io/fsutil.h"
#include "io/safetensors.h"
#include "util/base64.h"
#include "util/json_value.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include "colour_model.h"
#include "support.h"

namespace torchclip {
namespace {

namespace fs = std::filesystem;
using test::kColours;
using test::run_cli;

/// A `torchclip serve` child process on a free port.
class ServerProcess {
 public:
  /// Starts `torchclip serve ARGS --port 0` (output to `log`) and waits up to 120 s for it to listen.
  ServerProcess(const std::string& args, const fs::path& log) : log_(log) {
    const std::string cmd = std::string("exec ") + TORCHCLIP_BINARY + " serve " + args + " --port 0";
    pid_ = fork();
    if (pid_ == 0) {
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    const std::regex listening("listening on http://127\\.0\\.0\\.1:([0-9]+)/");
    while (std::chrono::steady_clock::now() < deadline) {
      std::smatch m;
      const std::string text = output();
      if (std::regex_search(text, m, listening)) {
        port_ = std::stoi(m[1]);
        return;
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  int port() const { return port_; }
  int exit_code() const { return exit_code_; }
  std::string output() const {
    std::ifstream f(log_);
    return std::string(std::istreambuf_iterator<char>(f), {});
  }
  /// Sends `signal`; the exit code once it exits (at most `seconds`), -1 when it had to be killed.
  int stop(int signal, double seconds) {
    kill(pid_, signal);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return -1;
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_connection_timeout(5);
    c.set_read_timeout(60);
    return c;
  }

 private:
  fs::path log_;
  pid_t pid_ = -1;
  int port_ = 0, exit_code_ = 0;
};


std::vector<std::string> hit_paths(const JsonValue& result) {
  std::vector<std::string> out;
  for (const auto& h : result.find("hits")->items()) out.push_back(h.find("path")->string());
  return out;
}

class ServeFixture : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(test::temp_dir("serve"));
    std::string log;
    model_ = new std::string(test::train_colour_model(*dir_, log));
    ASSERT_FALSE(model_->empty()) << log;
    auto r = run_cli("index --model " + *model_ + " --images " + (*dir_ / "imgs").string() + " --out " + index());
    ASSERT_EQ(r.code, 0) << r.out;
    r = run_cli("zeroshot --model " + *model_ + " --classes red,green,blue,yellow --templates " + (*dir_ / "templates.txt").string() +
                " --save-classifier " + (*dir_ / "colours.safetensors").string());
    ASSERT_EQ(r.code, 0) << r.out;
    server_ = new ServerProcess(serve_args() + " --batch-wait-ms 20 --max-body-mb 1 --max-image-mpixels 1 --max-k 50 --classifier colours=" +
                                    (*dir_ / "colours.safetensors").string(),
                                *dir_ / "serve.log");
    ASSERT_GT(server_->port(), 0) << server_->output();
  }
  static void TearDownTestSuite() {
    delete server_;
    fs::remove_all(*dir_);
    delete dir_;
    delete model_;
  }
  static std::string index() { return (*dir_ / "colours.idx").string(); }
  static std::string serve_args() { return "--model " + *model_ + " --index " + index() + " --threads 8"; }
  static std::string image(const char* colour, int i) { return (*dir_ / "imgs" / colour / (std::to_string(i) + ".png")).string(); }
  static std::string image_json(const std::string& path) { return "\"" + base64_encode(read_file(path)) + "\""; }

  static fs::path* dir_;
  static std::string* model_;
  static ServerProcess* server_;
};
fs::path* ServeFixture::dir_ = nullptr;
std::string* ServeFixture::model_ = nullptr;
ServerProcess* ServeFixture::server_ = nullptr;

TEST_F(ServeFixture, SearchEmbeddingsAndZeroShotAnswerAsTheCommandLineTools) {
  auto cli = server_->client();
  for (const char* colour : kColours) {
    const std::string q = std::string("a photo of a ") + colour + " square";
    auto r = cli.Post("/v1/search", "{\"query\": \"" + q + "\", \"k\": 10}", "application/json");
    ASSERT_TRUE(r && r->status == 200) << (r ? r->body : "no response");
    const auto j = JsonValue::parse(r->body);
    const auto& result = j.find("results")->items().at(0);
    EXPECT_EQ(result.find("query")->string(), q);
    // The same query through `torchclip search`: the same files in the same order, the same scores.
    const auto c = run_cli("search --index " + index() + " --model " + *model_ + " --query '" + q + "' --k 10 --json");
    ASSERT_EQ(c.code, 0) << c.out;
    const auto cj = JsonValue::parse(c.out);
    const auto& expected = cj.find("queries")->items().at(0).find("results")->items();
    ASSERT_EQ(result.find("hits")->items().size(), 10u);
    int matching = 0;
    for (size_t i = 0; i < 10; ++i) {
      const auto& hit = result.find("hits")->items()[i];
      EXPECT_EQ(hit.find("path")->string(), expected[i].find("path")->string()) << i;
      EXPECT_NEAR(hit.find("score")->number(), expected[i].find("score")->number(), 1e-5) << i;
      EXPECT_EQ(hit.find("rank")->number(), static_cast<double>(i + 1));
      matching += hit.find("path")->string().find(std::string("/") + colour + "/") != std::string::npos;
    }
    EXPECT_GE(matching, 8) << r->body;
  }
  // Several queries at once, and an image query: its own file first with score 1.
  auto r = cli.Post("/v1/search", R"({"queries": ["a photo of a red square", "a photo of a blue square"], "k": 3})", "application/json");
  ASSERT_TRUE(r && r->status == 200);
  EXPECT_EQ(JsonValue::parse(r->body).find("results")->items().size(), 2u);
  r = cli.Post("/v1/search", "{\"image\": " + image_json(image("green", 3)) + ", \"k\": 5}", "application/json");
  ASSERT_TRUE(r && r->status == 200) << (r ? r->body : "");
  auto c = run_cli("search --index " + index() + " --model " + *model_ + " --image " + image("green", 3) + " --k 5 --json");
  ASSERT_EQ(c.code, 0) << c.out;
  const auto served = JsonValue::parse(r->body), printed = JsonValue::parse(c.out);
  const auto& by_image = served.find("results")->items()[0].find("hits")->items();
  const auto& by_cli = printed.find("queries")->items()[0].find("results")->items();
  bool own_file = false;
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(by_image[i].find("path")->string(), by_cli[i].find("path")->string()) << i;
    EXPECT_NEAR(by_image[i].find("score")->number(), by_cli[i].find("score")->number(), 1e-5) << i;
    if (by_image[i].find("path")->string() == image("green", 3)) {
      own_file = true;
      EXPECT_NEAR(by_image[i].find("score")->number(), 1.0, 1e-3);  // an indexed image against itself
    }
  }
  EXPECT_TRUE(own_file) << r->body;

  // Embeddings in OpenAI's shape equal `torchclip embed`'s, as floats and as base64 float32.
  const fs::path texts = *dir_ / "texts.txt", out = *dir_ / "texts.safetensors";
  std::ofstream(texts) << "a photo of a red square\nsomething else entirely\n";
  auto e = run_cli("embed --model " + *model_ + " --texts " + texts.string() + " --out " + out.string());
  ASSERT_EQ(e.code, 0) << e.out;
  const at::Tensor want = load_safetensors(out.string()).tensors.at("embeddings");  // [2, E]
  r = cli.Post("/v1/embeddings", R"({"input": ["a photo of a red square", "something else entirely"], "model": "x"})", "application/json");
  ASSERT_TRUE(r && r->status == 200) << (r ? r->body : "");
  auto j = JsonValue::parse(r->body);
  EXPECT_EQ(j.find("object")->string(), "list");
  EXPECT_GT(j.find("usage")->find("prompt_tokens")->number(), 4);
  ASSERT_EQ(j.find("data")->items().size(), 2u);
  for (int64_t i = 0; i < 2; ++i) {
    const auto& d = j.find("data")->items()[i];
    EXPECT_EQ(d.find("index")->number(), static_cast<double>(i));
    std::vector<float> v;
    for (const auto& x : d.find("embedding")->items()) v.push_back(static_cast<float>(x.number()));
    EXPECT_TRUE(test::all_close(at::tensor(v), want[i], 1e-5, 1e-4));
  }
  r = cli.Post("/v1/embeddings", R"({"input": "a photo of a red square", "encoding_format": "base64"})", "application/json");
  ASSERT_TRUE(r && r->status == 200) << (r ? r->body : "");
  const std::string raw = base64_decode(JsonValue::parse(r->body).find("data")->items()[0].find("embedding")->string());
  ASSERT_EQ(raw.size(), static_cast<size_t>(want.size(1)) * 4);
  EXPECT_TRUE(test::all_close(at::from_blob(const_cast<char*>(raw.data()), {want.size(1)}, at::kFloat).clone(), want[0], 1e-5, 1e-4));
  // An image input embeds as the image query did: its dot product with itself is 1.
  r = cli.Post("/v1/embeddings", "{\"input\": [{\"image\": " + image_json(image("blue", 1)) + "}]}", "application/json");
  ASSERT_TRUE(r && r->status == 200) << (r ? r->body : "");
  double norm = 0;
  for (const auto& x : JsonValue::parse(r->body).find("data")->items()[0].find("embedding")->items()) norm += x.number() * x.number();
  EXPECT_NEAR(norm, 1.0, 1e-4);

  // Zero-shot: class names with templates, and the saved classifier, agree and name the colour.
  for (const char* colour : kColours) {
    const std::string img = image_json(image(colour, 5));
    r = cli.Post("/v1/zeroshot", "{\"image\": " + img + R"(, "classes": ["red", "green", "blue", "yellow"], "templates": ["a photo of a {} square"]})",
                 "application/json");
    ASSERT_TRUE(r && r->status == 200) << (r ? r->body : "");
    const auto a = JsonValue::parse(r->body);
    r = cli.Post("/v1/zeroshot", "{\"image\": " + img + R"(, "classifier": "colours"})", "application/json");
    ASSERT_TRUE(r && r->status == 200) << (r ? r->body : "");
    const auto b = JsonValue::parse(r->body);
    EXPECT_EQ(a.find("top")->string(), colour) << a.find("classes")->items().size();
    EXPECT_EQ(b.find("top")->string(), colour);
    double sum = 0;
    for (size_t i = 0; i < 4; ++i) {
      sum += a.find("classes")->items()[i].find("prob")->number();
      EXPECT_NEAR(a.find("classes")->items()[i].find("prob")->number(), b.find("classes")->items()[i].find("prob")->number(), 1e-5);
    }
    EXPECT_NEAR(sum, 1.0, 1e-5);
  }
  // Health and metrics count what was asked.
  r = cli.Get("/health");
  ASSERT_TRUE(r && r->status == 200);
  EXPECT_EQ(JsonValue::parse(r->body).find("images")->number(), 96);
  r = cli.Get("/metrics");
  ASSERT_TRUE(r && r->status == 200);
  EXPECT_NE(r->body.find("torchclip_requests_total{route=\"/v1/zeroshot\",code=\"200\"} 8\n"), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("torchclip_index_rows 96"), std::string::npos);
  EXPECT_NE(r->body.find("# TYPE torchclip_request_duration_seconds histogram"), std::string::npos);
}

TEST_F(ServeFixture, BadRequestsGetJsonErrorsAndTheServerStaysUp) {
  auto cli = server_->client();
  struct Case {
    std::string path, body;
    int status;
    std::string message;
  };
  const std::string huge_query(3000, 'a');
  // A 2000 x 1000 PNG: 2 Mpixels over the server's --max-image-mpixels 1, though its file is small.
  cv::Mat big(1000, 2000, CV_8UC3, cv::Scalar(10, 20, 30));
  std::vector<uchar> png;
  cv::imencode(".png", big, png);
  const std::string big_b64 = base64_encode(std::string(png.begin(), png.end()));
  std::string many_values = "[0";  // 200,001 values in a 400 kB body
  for (int i = 0; i < 200000; ++i) many_values += ",0";
  many_values += "]";
  std::string many_classes = "[", many_templates = "[";
  for (int i = 0; i < 200; ++i) many_classes += (i ? ",\"c" : "\"c") + std::to_string(i) + "\"";
  for (int i = 0; i < 30; ++i) many_templates += (i ? ",\"t{} " : "\"t{} ") + std::to_string(i) + "\"";
  many_classes += "]";
  many_templates += "]";
  const Case cases[] = {
      {"/v1/search", "{\"query\": ", 400, "invalid JSON at byte 10"},
      {"/v1/search", "[1, 2]", 400, "must be a JSON object, not array"},
      {"/v1/search", "", 400, "no body"},
      {"/v1/search", R"({"query": "x", "top_k": 3})", 400, "unknown field \"top_k\"; valid fields: query, queries, image, k"},
      {"/v1/search", R"({"query": "x", "k": 0})", 400, "\"k\" must be an integer from 1 to 50"},
      {"/v1/search", R"({"query": "x", "k": 51})", 400, "from 1 to 50"},
      {"/v1/search", R"({"query": "x", "k": 2.5})", 400, "an integer"},
      {"/v1/search", R"({"query": 7})", 400, "\"query\" must be a string, not number"},
      {"/v1/search", R"({"query": ""})", 400, "\"query\" is empty"},
      {"/v1/search", R"({"queries": []})", 400, "\"queries\" is empty"},
      {"/v1/search", R"({"query": "x", "image": "aGk="})", 400, "give exactly one of"},
      {"/v1/search", "{\"query\": \"" + huge_query + "\"}", 413, "the limit is 2000"},
      {"/v1/search", R"({"image": "bm90IGFuIGltYWdl"})", 400, "not a usable image (not_an_image)"},
      {"/v1/search", R"({"image": "***"})", 400, "base64: invalid character"},
      {"/v1/search", "{\"image\": \"" + big_b64 + "\"}", 413, "the limit is 1000000 pixels"},
      {"/v1/search", "{\"query\": \"" + std::string(2 << 20, 'a') + "\"}", 413, "larger than 1048576 bytes"},
      {"/v1/embeddings", R"({"inputs": ["x"]})", 400, "unknown field \"inputs\""},
      {"/v1/embeddings", R"({"input": [{"text": "x"}]})", 400, "an object must be {\"image\": base64}"},
      {"/v1/embeddings", R"({"input": "x", "encoding_format": "int8"})", 400, "\"float\" or \"base64\""},
      {"/v1/zeroshot", R"({"image": "aGk=", "classes": ["a"], "classifier": "colours"})", 400, "give \"classes\""},
      {"/v1/zeroshot", "{\"image\": " + image_json(image("red", 0)) + R"(, "classifier": "nope"})", 400, "no classifier named 'nope'; loaded: colours"},
      {"/v1/zeroshot", "{\"image\": " + image_json(image("red", 0)) + R"(, "classes": ["a"], "templates": ["no slot"]})", 400, "has no {}"},
      {"/v1/nothing", "{}", 404, "no route POST /v1/nothing; routes: POST /v1/search"},
      {"/v1/search", many_values, 400, "more than 100000 values"},
      {"/v1/zeroshot", "{\"image\": " + image_json(image("red", 0)) + ", \"classes\": " + many_classes + ", \"templates\": " +
                           many_templates + "}",
       413, "200 classes x 30 templates is 6000 prompts; the limit is 4096"},
  };
  for (const auto& c : cases) {
    auto r = cli.Post(c.path, c.body, "application/json");
    ASSERT_TRUE(r) << c.path << " " << c.body.substr(0, 80) << ": no response";
    EXPECT_EQ(r->status, c.status) << c.body.substr(0, 80) << " -> " << r->body;
    JsonValue j;
    ASSERT_NO_THROW(j = JsonValue::parse(r->body)) << r->body;
    const JsonValue* err = j.find("error");
    ASSERT_NE(err, nullptr) << r->body;
    EXPECT_NE(err->find("message")->string().find(c.message), std::string::npos) << c.body.substr(0, 80) << " -> " << r->body;
    EXPECT_EQ(err->find("code")->number(), c.status);
  }
  // Thumbnails: only rows of the index; no path can be named.
  auto r = cli.Get("/v1/thumbnail/0");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "image/jpeg");
  const cv::Mat thumb = cv::imdecode(std::vector<uchar>(r->body.begin(), r->body.end()), cv::IMREAD_COLOR);
  EXPECT_EQ(thumb.cols, 16);  // smaller than the thumbnail size: not enlarged
  for (const char* path : {"/v1/thumbnail/96", "/v1/thumbnail/-1", "/v1/thumbnail/..%2F..%2Fetc%2Fpasswd", "/v1/thumbnail/%2Fetc%2Fpasswd",
                           "/v1/thumbnail/0/../../../../etc/passwd", "/etc/passwd", "/v1/thumbnail/99999999999999999999"}) {
    r = cli.Get(path);
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 404) << path << " -> " << r->body.substr(0, 200);
    EXPECT_EQ(r->body.find("root:"), std::string::npos) << path;
  }
  // Without a key, a server on loopback answers only requests addressed to loopback by name (a
  // DNS-rebound page sends its own name).
  r = cli.Get("/health", httplib::Headers{{"Host", "evil.example:8080"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 403) << r->body;
  EXPECT_NE(r->body.find("Host 'evil.example:8080' is not this server's address"), std::string::npos) << r->body;
  r = cli.Get("/health", httplib::Headers{{"Host", "localhost:1"}});
  ASSERT_TRUE(r && r->status == 200);
  // Still up, and the errors are counted.
  r = cli.Get("/health");
  ASSERT_TRUE(r && r->status == 200);
  r = cli.Get("/metrics");
  ASSERT_TRUE(r && r->status == 200);
  EXPECT_NE(r->body.find("torchclip_requests_total{route=\"/v1/search\",code=\"413\"} 3\n"), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("torchclip_requests_total{route=\"/health\",code=\"403\"} 1\n"), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("torchclip_requests_total{route=\"other\",code=\"404\"} 2\n"), std::string::npos) << r->body;
}

TEST_F(ServeFixture, ConcurrentQueriesShareTowerCallsAndEqualOneAtATime) {
  const int kClients = 8;
  std::vector<std::string> queries;
  for (int i = 0; i < kClients; ++i) queries.push_back(std::string("a photo of a ") + kColours[i % 4] + (i < 4 ? " square" : " thing"));
  // One at a time (each alone in its batch: the next is sent after the answer).
  auto cli = server_->client();
  std::vector<std::string> alone;
  for (const auto& q : queries) {
    auto r = cli.Post("/v1/search", "{\"query\": \"" + q + "\", \"k\": 5}", "application/json");
    ASSERT_TRUE(r && r->status == 200);
    alone.push_back(r->body.substr(r->body.find("\"results\"")));
  }
  auto metrics = [&] { return cli.Get("/metrics")->body; };
  auto value = [](const std::string& text, const std::string& series) {
    const size_t p = text.find(series + " ");
    return p == std::string::npos ? 0.0 : std::stod(text.substr(p + series.size() + 1));
  };
  const std::string before = metrics();
  // All at once, three rounds: the server waits 20 ms (--batch-wait-ms) for more texts.
  std::vector<std::string> together(kClients);
  for (int round = 0; round < 3; ++round) {
    std::vector<std::thread> threads;
    for (int i = 0; i < kClients; ++i)
      threads.emplace_back([&, i] {
        auto c = server_->client();
        auto r = c.Post("/v1/search", "{\"query\": \"" + queries[i] + "\", \"k\": 5}", "application/json");
        together[i] = r && r->status == 200 ? r->body.substr(r->body.find("\"results\"")) : "failed";
      });
    for (auto& t : threads) t.join();
    for (int i = 0; i < kClients; ++i) {
      // Same rows in the same order; scores from the blocked multi-query kernel may differ in the last digits.
      const auto a = JsonValue::parse("{" + alone[i]), b = JsonValue::parse("{" + together[i]);
      EXPECT_EQ(hit_paths(a.find("results")->items()[0]), hit_paths(b.find("results")->items()[0])) << queries[i];
    }
  }
  const std::string after = metrics();
  const double calls = value(after, "torchclip_batch_size_count{tower=\"text\"}") - value(before, "torchclip_batch_size_count{tower=\"text\"}");
  const double texts = value(after, "torchclip_batch_size_sum{tower=\"text\"}") - value(before, "torchclip_batch_size_sum{tower=\"text\"}");
  std::cout << "[ serve ] " << 3 * kClients << " concurrent queries in " << calls << " text-tower calls (" << texts / calls
            << " texts per call)\n";
  EXPECT_EQ(texts, 3 * kClients);
  EXPECT_LE(calls, 3 * kClients / 2) << "concurrent queries were not batched";
}

TEST_F(ServeFixture, AnApiKeyGuardsEveryRouteButHealthAndThePage) {
  const fs::path key = *dir_ / "key.txt";
  std::ofstream(key) << "s3cret-key\n";
  fs::permissions(key, fs::perms::owner_read | fs::perms::owner_write);
  ServerProcess s(serve_args() + " --api-key-file " + key.string(), *dir_ / "serve_key.log");
  ASSERT_GT(s.port(), 0) << s.output();
  auto cli = s.client();
  const std::string body = R"({"query": "a photo of a red square", "k": 2})";
  for (const char* path : {"/v1/search", "/v1/embeddings", "/v1/zeroshot"}) {
    auto r = cli.Post(path, body, "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401) << path;
    EXPECT_NE(r->body.find("needs an API key"), std::string::npos) << r->body;
  }
  for (const char* path : {"/metrics", "/v1/thumbnail/0"}) {
    auto r = cli.Get(path);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401) << path;
  }
  httplib::Headers wrong = {{"Authorization", "Bearer s3cret-kez"}};
  auto r = cli.Post("/v1/search", wrong, body, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_NE(r->body.find("not valid"), std::string::npos);
  // The refused request's body was read: the next request on the same keep-alive connection
  // is parsed from its own first line, not from the rest of the last one's body.
  cli.set_keep_alive(true);
  r = cli.Post("/v1/search", wrong, std::string(R"({"query": ")") + std::string(50000, 'x') + "\"}", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  cli.set_bearer_token_auth("s3cret-key");
  r = cli.Post("/v1/search", body, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  r = cli.Post("/v1/search", httplib::Headers{{"Authorization", "bearer s3cret-key"}}, body, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << "the scheme is case-insensitive: " << r->body;
  r = cli.Get("/metrics");
  ASSERT_TRUE(r && r->status == 200);
  httplib::Client anonymous = s.client();
  r = anonymous.Get("/health");
  ASSERT_TRUE(r && r->status == 200);
  EXPECT_NE(r->body.find("\"auth_required\": true"), std::string::npos);
  r = anonymous.Get("/");
  ASSERT_TRUE(r && r->status == 200);
  EXPECT_NE(r->body.find("<title>torchclip search</title>"), std::string::npos);
  EXPECT_EQ(s.stop(SIGTERM, 20), 0) << s.output();
  test::CliRun c;
  // A port that is taken is an error naming it, not a second listener sharing it.
  c = run_cli("serve " + serve_args() + " --port " + std::to_string(server_->port()));
  EXPECT_EQ(c.code, 1) << c.out;
  EXPECT_NE(c.out.find("cannot listen on 127.0.0.1:" + std::to_string(server_->port())), std::string::npos) << c.out;
  // A key file that is missing or empty is a usage error before anything loads.
  std::ofstream(*dir_ / "empty.txt") << "\n";
  c = run_cli("serve " + serve_args() + " --api-key-file " + (*dir_ / "empty.txt").string());
  EXPECT_EQ(c.code, 2) << c.out;
  EXPECT_NE(c.out.find("the file is empty"), std::string::npos) << c.out;
}

TEST_F(ServeFixture, SigtermFinishesTheRequestsInFlightThenExits) {
  // A long batch wait holds a query in the server while SIGTERM arrives.
  ServerProcess s(serve_args() + " --batch-wait-ms 1500", *dir_ / "serve_term.log");
  ASSERT_GT(s.port(), 0) << s.output();
  int status = -1;
  std::string body;
  std::thread client([&] {
    auto cli = s.client();
    auto r = cli.Post("/v1/search", R"({"query": "a photo of a red square", "k": 3})", "application/json");
    if (r) status = r->status, body = r->body;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  const auto t0 = std::chrono::steady_clock::now();
  const int code = s.stop(SIGTERM, 30);
  client.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(code, 0) << s.output();
  EXPECT_EQ(status, 200) << body;
  EXPECT_NE(body.find("\"rank\": 3"), std::string::npos) << body;
  EXPECT_NE(s.output().find("SIGTERM received"), std::string::npos) << s.output();
  EXPECT_LT(seconds, 10);
  std::cout << "[ serve ] SIGTERM during a request: answered " << status << ", exited " << code << " after " << seconds << " s\n";
  // A signal that arrives while the model is still loading stops it too, once it listens.
  const std::string log = (*dir_ / "serve_early.log").string();
  const auto early = test::run_shell("timeout 60 sh -c '" + std::string(TORCHCLIP_BINARY) + " serve " + serve_args() + " --port 0 2>" +
                                     log + " & pid=$!; until grep -q loading " + log +
                                     "; do sleep 0.01; done; kill -TERM $pid; wait $pid; echo exit=$?'");
  EXPECT_NE(early.out.find("exit=0"), std::string::npos) << early.out;
  // Nothing listens any more.
  httplib::Client gone("127.0.0.1", s.port());
  gone.set_connection_timeout(2);
  EXPECT_FALSE(gone.Get("/health"));
}

TEST_F(ServeFixture, ThePageSearchesByTextAndByAnImageInHeadlessChromium) {
  const std::string url = "http://127.0.0.1:" + std::to_string(server_->port()) + "/";
  auto r = test::run_shell("timeout 180 /usr/bin/python3 " + std::string(TORCHCLIP_SOURCE_DIR) + "/tests/serve_browser.py " + url + " " +
                           (*dir_ / "imgs").string() + " " + image("yellow", 7) + " " + image("blue", 11));
  std::cout << "[ serve ] browser: " << r.out.substr(r.out.rfind('\n', r.out.size() - 2) + 1);
  EXPECT_EQ(r.code, 0) << "Selenium (python3-selenium, chromium-driver: scripts/setup.sh):\n" << r.out;
}

TEST_F(ServeFixture, ALoadTestHasNoErrorsAndTheServersMemoryDoesNotGrow) {
  auto r = run_cli("bench serve --url http://127.0.0.1:" + std::to_string(server_->port()) + " --clients 4 --seconds 4 --warmup 2 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = JsonValue::parse(r.out.substr(r.out.rfind("\n{") + 1));
  std::cout << "[ serve ] load: " << r.out.substr(r.out.rfind("\n{") + 1);
  EXPECT_GT(j.find("requests")->number(), 20);
  EXPECT_EQ(j.find("errors")->number(), 0) << r.out;
  EXPECT_GT(j.find("qps")->number(), 5);
  EXPECT_GE(j.find("p99_ms")->number(), j.find("p50_ms")->number());
  // Resident memory after the load within 5% of after the warm-up (allocator caches settle in warm-up).
  EXPECT_LT(j.find("server_rss_growth")->number(), 0.05) << r.out;
  EXPECT_GT(j.find("server_rss_before")->number(), 1 << 20);
}

}  // namespace
}  // namespace torchclip
