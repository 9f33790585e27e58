#include "util/json_value.h"

#include "util/utf8.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <unordered_set>

namespace torchclip {

namespace {

[[noreturn]] void json_error(std::string_view s, size_t at, const std::string& what) {
  std::string near;
  if (at < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[at]);
    near = c >= 0x20 && c < 0x7f ? fmt::format(" (at '{}')", static_cast<char>(c)) : fmt::format(" (at byte 0x{:02x})", c);
  } else {
    near = " (at the end)";
  }
  throw JsonError(fmt::format("invalid JSON at byte {}: {}{}", at, what, near), at);
}

uint32_t hex4(std::string_view s, size_t& i) {
  if (i + 4 > s.size()) json_error(s, i, "a \\u escape needs four hex digits");
  uint32_t v = 0;
  for (int k = 0; k < 4; ++k, ++i) {
    const char c = s[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= static_cast<uint32_t>(c - '0');
    else if (c >= 'a' && c <= 'f') v |= static_cast<uint32_t>(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= static_cast<uint32_t>(c - 'A' + 10);
    else json_error(s, i, "a \\u escape needs four hex digits");
  }
  return v;
}

}  // namespace

std::string read_json_string(std::string_view s, size_t& i) {
  if (i >= s.size() || s[i] != '"') json_error(s, i, "a string in double quotes was expected");
  ++i;
  std::string out;
  for (;;) {
    if (i >= s.size()) json_error(s, i, "the string is not closed");
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"') {
      ++i;
      return out;
    }
    if (c < 0x20) json_error(s, i, "a control character must be escaped in a string");
    if (c == '\\') {
      ++i;
      if (i >= s.size()) json_error(s, i, "the escape is not finished");
      const char e = s[i++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4(s, i);
          if (cp >= 0xDC00 && cp <= 0xDFFF) json_error(s, i - 4, "a low surrogate without a high one");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (s.substr(i, 2) != "\\u") json_error(s, i, "a high surrogate must be followed by a \\u low surrogate");
            i += 2;
            const uint32_t low = hex4(s, i);
            if (low < 0xDC00 || low > 0xDFFF) json_error(s, i - 4, "a high surrogate must be followed by a low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          utf8_append(out, static_cast<char32_t>(cp));
          break;
        }
        default:
          json_error(s, i - 1, "unknown escape (valid: \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)");
      }
      continue;
    }
    const size_t n = utf8_sequence_length(s, i);
    if (n == 0) json_error(s, i, "the string is not valid UTF-8");
    out.append(s.substr(i, n));
    i += n;
  }
}

class JsonParser {
 public:
  JsonParser(std::string_view text, int max_depth, int64_t max_values) : s_(text), max_depth_(max_depth), max_values_(max_values) {}

  JsonValue document() {
    skip_space();
    JsonValue v = value(0);
    skip_space();
    if (i_ != s_.size()) fail("unexpected text after the JSON value");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { json_error(s_, i_, what); }
  void skip_space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  bool literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }

  JsonValue value(int depth) {
    if (i_ >= s_.size()) fail("a value was expected");
    if (++values_ > max_values_) fail(fmt::format("more than {} values", max_values_));
    JsonValue v;
    const char c = s_[i_];
    if (c == '{' || c == '[') {
      if (depth >= max_depth_) fail(fmt::format("nested deeper than {} levels", max_depth_));
      c == '{' ? object(v, depth + 1) : array(v, depth + 1);
    } else if (c == '"') {
      v.type_ = JsonValue::Type::kString;
      v.string_ = string();
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      v.type_ = JsonValue::Type::kNumber;
      v.number_ = number();
    } else if (literal("true")) {
      v.type_ = JsonValue::Type::kBool;
      v.bool_ = true;
    } else if (literal("false")) {
      v.type_ = JsonValue::Type::kBool;
    } else if (!literal("null")) {
      fail("a value was expected (object, array, string, number, true, false or null)");
    }
    return v;
  }

  void object(JsonValue& v, int depth) {
    v.type_ = JsonValue::Type::kObject;
    ++i_;  // {
    skip_space();
    if (i_ < s_.size() && s_[i_] == '}') {
      ++i_;
      return;
    }
    std::unordered_set<std::string> seen;
    for (;;) {
      skip_space();
      if (i_ >= s_.size() || s_[i_] != '"') fail("a key (a string in double quotes) was expected");
      const size_t key_at = i_;
      std::string key = string();
      if (!seen.insert(key).second) {
        i_ = key_at;
        fail(fmt::format("key \"{}\" appears twice", key));
      }
      skip_space();
      if (i_ >= s_.size() || s_[i_] != ':') fail("':' was expected after the key");
      ++i_;
      skip_space();
      v.keys_.push_back(std::move(key));
      v.items_.push_back(value(depth));
      skip_space();
      if (i_ < s_.size() && s_[i_] == ',') {
        ++i_;
        continue;
      }
      if (i_ < s_.size() && s_[i_] == '}') {
        ++i_;
        return;
      }
      fail("',' or '}' was expected in the object");
    }
  }

  void array(JsonValue& v, int depth) {
    v.type_ = JsonValue::Type::kArray;
    ++i_;  // [
    skip_space();
    if (i_ < s_.size() && s_[i_] == ']') {
      ++i_;
      return;
    }
    for (;;) {
      skip_space();
      v.items_.push_back(value(depth));
      skip_space();
      if (i_ < s_.size() && s_[i_] == ',') {
        ++i_;
        continue;
      }
      if (i_ < s_.size() && s_[i_] == ']') {
        ++i_;
        return;
      }
      fail("',' or ']' was expected in the array");
    }
  }

  std::string string() {
    try {
      return read_json_string(s_, i_);
    } catch (const JsonError& e) {
      i_ = e.offset();
      throw;
    }
  }

  double number() {
    const size_t start = i_;
    auto digits = [&] {
      const size_t from = i_;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
      return i_ - from;
    };
    if (s_[i_] == '-') ++i_;
    if (i_ < s_.size() && s_[i_] == '0') {
      ++i_;
      if (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') fail("a number cannot have a leading zero");
    } else if (digits() == 0) {
      fail("a digit was expected");
    }
    if (i_ < s_.size() && s_[i_] == '.') {
      ++i_;
      if (digits() == 0) fail("a digit was expected after '.'");
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (digits() == 0) fail("a digit was expected in the exponent");
    }
    const std::string text(s_.substr(start, i_ - start));
    const double v = std::strtod(text.c_str(), nullptr);
    if (!std::isfinite(v)) {
      i_ = start;
      fail("the number is too large for a double");
    }
    return v;
  }

  std::string_view s_;
  int max_depth_;
  int64_t max_values_, values_ = 0;
  size_t i_ = 0;
};

JsonValue JsonValue::parse(std::string_view text, int max_depth, int64_t max_values) {
  return JsonParser(text, max_depth, max_values).document();
}

const char* JsonValue::type_name() const {
  switch (type_) {
    case Type::kNull: return "null";
    case Type::kBool: return "boolean";
    case Type::kNumber: return "number";
    case Type::kString: return "string";
    case Type::kArray: return "array";
    case Type::kObject: return "object";
  }
  return "?";
}

const JsonValue* JsonValue::find(std::string_view key) const {
  for (size_t i = 0; i < keys_.size(); ++i)
    if (keys_[i] == key) return &items_[i];
  return nullptr;
}

}  // namespace torchclip
