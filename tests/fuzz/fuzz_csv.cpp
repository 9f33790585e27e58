// libFuzzer harness: CSV/TSV sources (data/source.h). The field parser (parse_csv) with both
// separators, then the whole source as a user's file reaches it: byte-order mark, separator
// sniffing, header columns, integer labels, every row streamed. A bad file must be a
// std::runtime_error naming it; a bad row is a sample marked with its error, not an exception.
#include "data/source.h"
#include "fuzz_support.h"

#include <stdexcept>
#include <string>

namespace {

void read_source(const std::string& path) {
  torchclip::fuzz::read_every_sample<torchclip::data::StreamSpec, torchclip::data::RawSample>(
      [&] { return torchclip::data::csv_source(path, torchclip::data::CsvOptions().label_key("label")); });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (char sep : {',', '\t'}) {
    const auto rows = torchclip::data::parse_csv(text, sep);
    for (size_t r = 1; r < rows.size(); ++r)
      if (rows[r].line <= rows[r - 1].line) torchclip::fuzz::violated("parse_csv: row line numbers do not increase");
  }
  // The extension picks the fallback separator when the header does not settle it.
  read_source(torchclip::fuzz::temp_file(data, size, ".csv"));
  read_source(torchclip::fuzz::temp_file(data, size, ".tsv"));
  return 0;
}
