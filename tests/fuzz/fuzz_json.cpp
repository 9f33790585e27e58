// libFuzzer harness: the JSON reader of request bodies (util/json_value.h), which reads bytes
// from the network. A bad document must be a JsonError; a good one is walked whole, and every
// string in it must survive json_quote and read_json_string unchanged (the writer and the
// reader agree on escapes, surrogates and UTF-8).
#include "fuzz_support.h"
#include "util/json.h"
#include "util/json_value.h"

#include <string>

using torchclip::JsonValue;

namespace {

void check_strings(const JsonValue& v) {
  auto round_trip = [](const std::string& s) {
    const std::string quoted = torchclip::json_quote(s);
    size_t pos = 0;
    if (torchclip::read_json_string(quoted, pos) != s || pos != quoted.size())
      torchclip::fuzz::violated("a string read from JSON does not survive json_quote and read_json_string");
  };
  if (v.is_string()) round_trip(v.string());
  for (const auto& k : v.keys()) round_trip(k);
  for (const auto& item : v.items()) check_strings(item);
  if (v.is_object() && v.keys().size() != v.items().size()) torchclip::fuzz::violated("an object's keys and values differ in count");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    check_strings(JsonValue::parse(text, 64));
  } catch (const torchclip::JsonError& e) {
    if (e.offset() > size) torchclip::fuzz::violated("a JsonError offset past the end of the input");
  } catch (const std::exception& e) {
    torchclip::fuzz::undocumented(e);
  }
  return 0;
}
