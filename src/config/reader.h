// The YAML reader behind every config parser: typed reads that know the file, the line and the
// dotted key, and reject keys nobody read; ReadVisitor walks a schema (config/schema.h) with it.
// Internal to src/config/; everything else uses the typed structs.
#pragma once

#include "config/enums.h"
#include "config/model_config.h"
#include "config/schema.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace torchclip::detail {

/// Reads typed values out of one YAML mapping, remembering which keys were consumed.
class Reader {
 public:
  Reader(YAML::Node node, std::string source, std::string path)
      : node_(std::move(node)), source_(std::move(source)), path_(std::move(path)) {
    if (!node_.IsMap()) {
      fail(node_, fmt::format("expected a mapping of keys, got {}", kind(node_)));
    }
  }

  /// "file:line: key" prefix for messages about `key` (or the mapping itself when key is empty).
  std::string where(const YAML::Node& n, const std::string& key = "") const {
    std::string k = key.empty() ? path_ : dotted(key);
    std::string loc = n.Mark().is_null() ? source_ : fmt::format("{}:{}", source_, n.Mark().line + 1);
    return k.empty() ? loc : fmt::format("{}: {}", loc, k);
  }

  [[noreturn]] void fail(const YAML::Node& n, const std::string& msg, const std::string& key = "") const {
    throw ConfigError(fmt::format("{}: {}", where(n, key), msg));
  }

  std::string dotted(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  bool has(const std::string& key) const { return static_cast<bool>(node_[key]); }

  template <typename T>
  void get(const std::string& key, T& out) {
    seen_.insert(key);
    YAML::Node n = node_[key];
    if (n) out = convert<T>(n, key);
  }

  /// A number that must lie in `bound` (checked when the key is present).
  template <typename T>
  void get(const std::string& key, T& out, const Bound& bound) {
    get(key, out);
    if (!node_[key]) return;
    double v = 0;
    if constexpr (std::is_same_v<T, std::optional<double>>) {
      if (!out) return;
      v = *out;
    } else {
      v = static_cast<double>(out);
    }
    if (!bound.contains(v)) fail(node_[key], fmt::format("{}, got {}", bound.describe(), v), key);
  }

  /// A string restricted to `choices`.
  void get_choice(const std::string& key, std::string& out, const std::vector<std::string>& choices) {
    get(key, out);
    if (std::find(choices.begin(), choices.end(), out) == choices.end()) {
      fail(node_[key] ? node_[key] : node_, fmt::format("\"{}\" is not one of: {}", out, fmt::join(choices, ", ")), key);
    }
  }

  /// An OpenCLIP key torchclip does not implement: accepted only with its inert default value.
  void inert(const std::string& key, const std::string& inert_value, const std::string& what) {
    seen_.insert(key);
    YAML::Node n = node_[key];
    if (!n || n.IsNull()) return;
    std::string v = n.IsScalar() ? n.Scalar() : "<non-scalar>";
    if (v == inert_value || (inert_value == "false" && (v == "False" || v == "0"))) return;
    fail(n, fmt::format("{} is not supported by torchclip (only {} is accepted, got {})", what,
                        inert_value == "null" ? "null" : inert_value, v), key);
  }

  /// Keys OpenCLIP uses that only matter when another, rejected, key is set.
  void ignore(std::initializer_list<const char*> keys) {
    for (const char* k : keys) seen_.insert(k);
  }

  Reader child(const std::string& key) {
    seen_.insert(key);
    YAML::Node n = node_[key];
    return Reader(n ? n : YAML::Node(YAML::NodeType::Map), source_, dotted(key));
  }

  /// Rejects any key that was not read, listing the valid ones.
  void finish() const {
    for (const auto& kv : node_) {
      auto key = kv.first.as<std::string>();
      if (!seen_.count(key)) {
        fail(kv.first, fmt::format("unknown key '{}'; valid keys here: {}", dotted(key), fmt::join(seen_, ", ")));
      }
    }
  }

  const YAML::Node& node() const { return node_; }

 private:
  /// A value as quoted in a message: at most the rest of the source line it starts on, and at
  /// most 60 bytes. A path given where a config belongs (`model: ../../etc/passwd`) must not echo
  /// the file: YAML folds a plain scalar's lines into one, so the cut uses the source line.
  std::string quote_excerpt(const YAML::Node& n) const {
    const std::string& v = n.Scalar();
    size_t cut = std::min<size_t>(v.find_first_of("\r\n"), 60);
    if (!n.Mark().is_null()) {
      std::ifstream f(source_);
      std::string line;
      for (int i = 0; i <= n.Mark().line && std::getline(f, line); ++i) {
      }
      if (f && static_cast<size_t>(n.Mark().column) <= line.size())
        cut = std::min(cut, line.size() - static_cast<size_t>(n.Mark().column));
    }
    return cut >= v.size() ? fmt::format("\"{}\"", v) : fmt::format("\"{}...\" ({} bytes)", v.substr(0, cut), v.size());
  }

  std::string kind(const YAML::Node& n) const {
    switch (n.Type()) {
      case YAML::NodeType::Null: return "nothing (null)";
      case YAML::NodeType::Scalar: return quote_excerpt(n);
      case YAML::NodeType::Sequence: return "a list";
      case YAML::NodeType::Map: return "a mapping";
      default: return "an undefined value";
    }
  }

  template <typename T>
  T convert(const YAML::Node& n, const std::string& key) const {
    if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
      if (n.IsScalar()) return {scalar<int64_t>(n, key, "an integer or a list of integers")};
      if (!n.IsSequence()) fail(n, fmt::format("expected an integer or a list of integers, got {}", kind(n)), key);
      std::vector<int64_t> v;
      for (const auto& e : n) v.push_back(scalar<int64_t>(e, key, "a list of integers"));
      return v;
    } else if constexpr (std::is_same_v<T, std::optional<double>>) {
      if (n.IsNull()) return std::nullopt;
      return scalar<double>(n, key, "a number or null");
    } else if constexpr (std::is_same_v<T, std::array<double, 2>>) {
      if (!n.IsSequence() || n.size() != 2) fail(n, "expected a list of two numbers", key);
      return {scalar<double>(n[0], key, "a list of two numbers"), scalar<double>(n[1], key, "a list of two numbers")};
    } else if constexpr (std::is_enum_v<T>) {
      const std::string name = scalar<std::string>(n, key, "a string");
      T out{};
      if (!try_parse_enum(name, out))
        fail(n, fmt::format("\"{}\" is not one of: {}", name, fmt::join(EnumNames<T>::get(), ", ")), key);
      return out;
    } else if constexpr (std::is_same_v<T, uint64_t>) {
      const int64_t v = scalar<int64_t>(n, key, "a non-negative integer");
      if (v < 0) fail(n, fmt::format("expected a non-negative integer, got {}", v), key);
      return static_cast<uint64_t>(v);
    } else if constexpr (std::is_same_v<T, int64_t>) {
      return scalar<int64_t>(n, key, "an integer");
    } else if constexpr (std::is_same_v<T, double>) {
      return scalar<double>(n, key, "a number");
    } else if constexpr (std::is_same_v<T, bool>) {
      return scalar<bool>(n, key, "true or false");
    } else {
      static_assert(std::is_same_v<T, std::string>);
      return scalar<std::string>(n, key, "a string");
    }
  }

  template <typename T>
  T scalar(const YAML::Node& n, const std::string& key, const char* expected) const {
    if (!n.IsScalar()) fail(n, fmt::format("expected {}, got {}", expected, kind(n)), key);
    if constexpr (std::is_same_v<T, int64_t>) {
      // Decimal only: yaml-cpp reads "016" as octal 14 and "0x10" as 16, which nobody means in a
      // config; "1e12" is a float, not a count.
      const std::string& s = n.Scalar();
      const size_t start = !s.empty() && (s[0] == '-' || s[0] == '+') ? 1 : 0;
      const bool decimal = s.size() > start && s.find_first_not_of("0123456789", start) == std::string::npos;
      if (!decimal) fail(n, fmt::format("expected {} (decimal digits), got {}", expected, kind(n)), key);
      try {
        return std::stoll(s);
      } catch (const std::exception&) {
        fail(n, fmt::format("expected {}, got {}, which is out of range", expected, kind(n)), key);
      }
    }
    try {
      return n.as<T>();
    } catch (const YAML::Exception&) {
      fail(n, fmt::format("expected {}, got {}", expected, kind(n)), key);
    }
  }

  YAML::Node node_;
  std::string source_;
  std::string path_;
  std::set<std::string> seen_;
};

/// A constraint between keys failed: "SOURCE: KEY: MESSAGE".
[[noreturn]] inline void invalid(const std::string& source, const std::string& key, const std::string& msg) {
  throw ConfigError(fmt::format("{}: {}: {}", source, key, msg));
}

/// Walks a schema (config/schema.h), reading each key into its member.
class ReadVisitor {
 public:
  static constexpr bool kReading = true;
  explicit ReadVisitor(Reader& r) : r_(r) {}

  template <typename T>
  void field(const std::string& key, T& out) { r_.get(key, out); }
  template <typename T>
  void field(const std::string& key, T& out, const Bound& bound) { r_.get(key, out, bound); }
  /// A key that may be null, which leaves the default.
  template <typename T>
  void nullable_field(const std::string& key, T& out) {
    if (r_.has(key) && r_.node()[key].IsNull()) r_.ignore({key.c_str()});
    else r_.get(key, out);
  }
  void choice(const std::string& key, std::string& out, const std::vector<std::string>& choices) {
    r_.get_choice(key, out, choices);
  }
  template <typename S>
  void child(const std::string& key, S& out) {
    Reader sub = r_.child(key);
    ReadVisitor v(sub);
    visit_fields(v, out);
    sub.finish();
  }
  void inert(const std::string& key, const std::string& value, const std::string& what) { r_.inert(key, value, what); }
  void ignore(std::initializer_list<const char*> keys) { r_.ignore(keys); }

 private:
  Reader& r_;
};

/// Loads a YAML file, turning I/O and syntax errors into ConfigError naming the file and line.
YAML::Node load_yaml_file(const std::string& path);

/// Applies a dotted override "a.b.c=value" to `root` (creating mappings); the value is parsed as
/// YAML, so numbers, booleans and lists keep their types. Throws ConfigError.
void apply_override(YAML::Node& root, const std::string& assignment);

}  // namespace torchclip::detail
