// The strict JSON reader (util/json_value.h) against hand-written documents: the values RFC 8259
// defines, and the malformed ones a client of the server may send.
#include "util/json_value.h"

#include <gtest/gtest.h>

#include <string>

#include "support.h"

namespace torchclip {
namespace {

TEST(JsonValue, ParsesEveryKindOfValue) {
  const auto v = JsonValue::parse(R"( {"a": [1, -2.5e2, 0, 0.125, true, false, null], "s": "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00",
                                       "o": {}, "e": [], "n": -0} )");
  ASSERT_TRUE(v.is_object());
  ASSERT_EQ(v.keys().size(), 5u);
  const JsonValue* a = v.find("a");
  ASSERT_NE(a, nullptr);
  ASSERT_EQ(a->items().size(), 7u);
  EXPECT_EQ(a->items()[0].number(), 1);
  EXPECT_EQ(a->items()[1].number(), -250);
  EXPECT_EQ(a->items()[3].number(), 0.125);
  EXPECT_TRUE(a->items()[4].is_bool() && a->items()[4].boolean());
  EXPECT_TRUE(a->items()[5].is_bool() && !a->items()[5].boolean());
  EXPECT_TRUE(a->items()[6].is_null());
  // \u00e9 is U+00E9 (2 UTF-8 bytes), the surrogate pair U+1F600 (4 bytes).
  EXPECT_EQ(v.find("s")->string(), std::string("x\"\\/\b\f\n\r\t") + "\xC3\xA9" + "\xF0\x9F\x98\x80");
  EXPECT_TRUE(v.find("o")->is_object() && v.find("o")->keys().empty());
  EXPECT_TRUE(v.find("e")->is_array() && v.find("e")->items().empty());
  EXPECT_EQ(v.find("missing"), nullptr);
  EXPECT_EQ(JsonValue::parse("\"caf\xC3\xA9\"").string(), "caf\xC3\xA9");  // raw UTF-8 passes through
  EXPECT_EQ(JsonValue::parse("1E3").number(), 1000);
  EXPECT_STREQ(JsonValue::parse("[]").type_name(), "array");
}

TEST(JsonValue, RejectsMalformedDocumentsNamingTheOffset) {
  struct Case {
    const char* text;
    const char* message;  // a part of the error
  };
  const Case cases[] = {
      {"", "a value was expected"},
      {"{", "a key"},
      {"{\"a\" 1}", "':' was expected"},
      {"{\"a\": 1,}", "a key"},
      {"[1, 2,]", "a value was expected"},
      {"[1 2]", "',' or ']'"},
      {"{\"a\": 1, \"a\": 2}", "appears twice"},
      {"{'a': 1}", "a key"},
      {"01", "leading zero"},
      {"1.", "after '.'"},
      {"1e", "exponent"},
      {"-", "a digit"},
      {"NaN", "a value was expected"},
      {"1e999", "too large"},
      {"\"abc", "not closed"},
      {"\"a\nb\"", "control character"},
      {"\"\\x\"", "unknown escape"},
      {"\"\\u12\"", "four hex digits"},
      {"\"\\udc00\"", "low surrogate"},
      {"\"\\ud83dx\"", "followed by"},
      {"\"\xC3\"", "UTF-8"},
      {"\"\xED\xA0\x80\"", "UTF-8"},  // an encoded surrogate
      {"tru", "a value was expected"},
      {"{} {}", "after the JSON value"},
      {"[1] x", "after the JSON value"},
  };
  for (const auto& c : cases) {
    const std::string err = test::error_of<JsonError>([&] { JsonValue::parse(c.text); });
    EXPECT_NE(err.find(c.message), std::string::npos) << "input " << c.text << ": " << err;
    EXPECT_NE(err.find("invalid JSON at byte "), std::string::npos) << err;
  }
  // The offset points at the problem: the second "a" starts at byte 9.
  try {
    JsonValue::parse("{\"a\": 1, \"a\": 2}");
    FAIL();
  } catch (const JsonError& e) {
    EXPECT_EQ(e.offset(), 9u);
  }
}

TEST(JsonValue, DepthIsLimitedSoHostileNestingIsAnErrorNotAStackOverflow) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_NE(test::error_of<JsonError>([&] { JsonValue::parse(deep); }).find("nested deeper than 64"), std::string::npos);
  const std::string ok = std::string(64, '[') + std::string(64, ']');
  EXPECT_TRUE(JsonValue::parse(ok).is_array());
  EXPECT_NE(test::error_of<JsonError>([&] { JsonValue::parse("[" + ok + "]"); }).find("deeper"), std::string::npos);
}

}  // namespace
}  // namespace torchclip
