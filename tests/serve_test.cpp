// The pieces of the retrieval service that need no server: base64 against RFC 4648's test
// vectors, and the Prometheus histogram against hand-counted buckets.
#include "serve/metrics.h"
#include "util/base64.h"

#include <gtest/gtest.h>

#include <string>

#include "support.h"

namespace torchclip {
namespace {

TEST(Base64, MatchesRfc4648Vectors) {
  const std::pair<const char*, const char*> vectors[] = {{"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"},  {"foob", "Zm9vYg=="},  {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(base64_encode(plain), encoded);
    EXPECT_EQ(base64_decode(encoded), plain);
  }
  EXPECT_EQ(base64_decode("Zm9vYg"), "foob");  // padding optional
  const std::string bytes("\x00\xff\x10\x80", 4);
  EXPECT_EQ(base64_decode(base64_encode(bytes)), bytes);
  EXPECT_NE(test::error_of<std::invalid_argument>([] { base64_decode("Zm!v"); }).find("offset 2"), std::string::npos);
  EXPECT_NE(test::error_of<std::invalid_argument>([] { base64_decode("Z"); }).find("whole number"), std::string::npos);
  EXPECT_NE(test::error_of<std::invalid_argument>([] { base64_decode("Zg==="); }).find("invalid character"), std::string::npos);
}

TEST(Metrics, HistogramBucketsAreCumulativeAndRequestsAreCountedByRouteAndStatus) {
  serve::Histogram h({1, 2, 4});
  for (double v : {0.5, 1.0, 1.5, 3.0, 9.0}) h.observe(v);
  // Buckets le=1: {0.5, 1.0}; le=2: + 1.5; le=4: + 3.0; +Inf: + 9.0. Sum 15.
  EXPECT_EQ(h.render("x", "t=\"a\""),
            "x_bucket{t=\"a\",le=\"1\"} 2\nx_bucket{t=\"a\",le=\"2\"} 3\nx_bucket{t=\"a\",le=\"4\"} 4\n"
            "x_bucket{t=\"a\",le=\"+Inf\"} 5\nx_sum{t=\"a\"} 15\nx_count{t=\"a\"} 5\n");
  serve::Metrics m;
  m.request("/v1/search", 200, 0.003);
  m.request("/v1/search", 200, 0.02);
  m.request("/v1/search", 400, 0.001);
  m.batch("text", 3);
  const std::string text = m.render({{"torchclip_index_rows", 96}});
  EXPECT_NE(text.find("torchclip_requests_total{route=\"/v1/search\",code=\"200\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("torchclip_requests_total{route=\"/v1/search\",code=\"400\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("torchclip_request_errors_total{route=\"/v1/search\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("torchclip_request_duration_seconds_bucket{route=\"/v1/search\",le=\"0.005\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("torchclip_batch_size_sum{tower=\"text\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("torchclip_index_rows 96\n"), std::string::npos) << text;
  EXPECT_GT(serve::resident_memory_bytes(), 1 << 20);
}

}  // namespace
}  // namespace torchclip
