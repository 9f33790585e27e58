// JSON helpers: the one string quoter for everything torchclip writes as JSON (reports,
// safetensors headers, tool output), and the one reader of the flat one-line objects it reads
// back (metrics.jsonl, benchmark peers' reports).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "util/utf8.h"

namespace torchclip {

/// `s` as a JSON string literal, quotes included. Bytes that are not UTF-8 (a Latin-1 file name,
/// a truncated caption) become U+FFFD, so the output is always valid JSON.
inline std::string json_quote(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    const char c = s[i];
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
      ++i;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
      out += buf;
      ++i;
    } else if (const size_t n = utf8_sequence_length(s, i)) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
      ++i;
    }
  }
  return out + "\"";
}

/// A number as JSON, printed with `format` (a printf format for one double), or null when it is
/// NaN or infinite, which JSON cannot spell ("nan" would make the whole output unreadable).
inline std::string json_float(double v, const char* format = "%.6f") {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

/// The one reader of the flat, one-line JSON objects torchclip itself writes (metrics.jsonl
/// lines) or its benchmark peers print: the number after `"key":` (spaces allowed around the
/// colon). nullopt when the key is absent or its value is not a number (a string, a partial line).
inline std::optional<double> json_find_number(std::string_view json, std::string_view key) {
  const std::string quoted = "\"" + std::string(key) + "\"";
  for (size_t p = json.find(quoted); p != std::string_view::npos; p = json.find(quoted, p + 1)) {
    size_t i = p + quoted.size();
    while (i < json.size() && json[i] == ' ') ++i;
    if (i >= json.size() || json[i] != ':') continue;  // the text of a value, not a key
    ++i;
    while (i < json.size() && json[i] == ' ') ++i;
    const std::string rest(json.substr(i, 40));
    char* end = nullptr;
    const double v = std::strtod(rest.c_str(), &end);
    if (end == rest.c_str()) return std::nullopt;
    return v;
  }
  return std::nullopt;
}

/// json_find_number, 0 when absent.
inline double json_number(std::string_view json, std::string_view key) { return json_find_number(json, key).value_or(0.0); }

}  // namespace torchclip
