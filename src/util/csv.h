// Writing CSV: the one field quoter for every CSV torchclip writes (zero-shot predictions,
// confusion matrices).
#pragma once

#include <string>

namespace torchclip {

/// `s` as one CSV field: quoted (quotes doubled) when it holds a comma, quote or line break.
inline std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char ch : s) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return q + "\"";
}

}  // namespace torchclip
