// The one JSON string quoter for everything torchclip writes as JSON (reports, safetensors
// headers, tool output): quotes, backslashes and control characters are escaped.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace torchclip {

/// `s` as a JSON string literal, quotes included.
inline std::string json_quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

/// The number after `"key":` in a flat JSON object (the one-line reports our benchmark peers
/// print); 0 when the key is absent.
inline double json_number(const std::string& json, const std::string& key) {
  const size_t p = json.find("\"" + key + "\":");
  return p == std::string::npos ? 0.0 : std::stod(json.substr(p + key.size() + 3));
}

}  // namespace torchclip
