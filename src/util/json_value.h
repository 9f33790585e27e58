// A strict JSON reader (RFC 8259) for what clients send the server: request bodies of unknown
// origin. Every error names the byte offset and what was expected; nesting deeper than
// `max_depth`, duplicate keys, invalid UTF-8, lone surrogates, control characters in strings,
// leading zeros, trailing commas and trailing text are errors, never a crash or a guess.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace torchclip {

class JsonError : public std::invalid_argument {
 public:
  JsonError(const std::string& what, size_t offset) : std::invalid_argument(what), offset_(offset) {}
  size_t offset() const { return offset_; }

 private:
  size_t offset_;
};

/// Reads the JSON string literal that starts at text[pos] (its opening quote), unescaped, and
/// moves `pos` past the closing quote. Throws JsonError at the offending byte. The one string
/// reader of every JSON torchclip reads (request bodies, safetensors headers).
std::string read_json_string(std::string_view text, size_t& pos);

class JsonValue {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  /// Parses the whole of `text` (one value, surrounding whitespace allowed). Throws JsonError,
  /// also past `max_depth` levels of nesting or `max_values` values in all (each value takes
  /// about 100 bytes: the budget bounds what a small body can make the reader allocate).
  static JsonValue parse(std::string_view text, int max_depth = 64, int64_t max_values = int64_t{1} << 24);

  Type type() const { return type_; }
  /// "null", "boolean", "number", "string", "array" or "object": for messages.
  const char* type_name() const;
  bool is_null() const { return type_ == Type::kNull; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_number() const { return type_ == Type::kNumber; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_object() const { return type_ == Type::kObject; }

  bool boolean() const { return bool_; }
  double number() const { return number_; }
  const std::string& string() const { return string_; }
  /// The elements of an array, or the values of an object (in the order written).
  const std::vector<JsonValue>& items() const { return items_; }
  /// The keys of an object, parallel to items().
  const std::vector<std::string>& keys() const { return keys_; }
  /// The value of `key` in an object; nullptr when absent or not an object.
  const JsonValue* find(std::string_view key) const;

 private:
  friend class JsonParser;
  Type type_ = Type::kNull;
  bool bool_ = false;
  double number_ = 0;
  std::string string_;
  std::vector<JsonValue> items_;
  std::vector<std::string> keys_;
};

}  // namespace torchclip
