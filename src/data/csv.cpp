// The CSV/TSV field parser behind csv_source (data/source.h): RFC 4180 quoting, rows that break
// it kept and marked, never allowed to swallow the rows after them.
#include "data/source.h"

#include <fmt/format.h>

#include <algorithm>

namespace torchclip::data {

namespace {

/// Where a multi-line pass of the CSV parser gave up: the row starting at `line` (text position
/// `begin`) is malformed for `why`.
struct CsvRestart {
  size_t begin = std::string::npos;
  int64_t line = 0;
  std::string why;
};

/// One pass of the CSV parser from `begin`. With `multiline`, a quoted field may hold line
/// breaks (RFC 4180), and the pass stops at the first malformed row that spans lines (its quote
/// probably swallowed the rows after it); without, a line break always ends the row and a quote
/// still open there makes the row malformed.
CsvRestart parse_csv_from(const std::string& text, char sep, size_t begin, int64_t first_line, bool multiline,
                          std::vector<CsvRow>& rows) {
  CsvRow row;
  std::string field;
  int64_t line = first_line;
  row.line = line;
  size_t row_begin = begin;
  bool quoted = false, field_started = false, closed_quote = false;
  auto end_field = [&] {
    row.fields.push_back(std::move(field));
    field.clear();
    field_started = closed_quote = false;
  };
  auto end_row = [&](size_t next) {
    end_field();
    rows.push_back(std::move(row));
    row = CsvRow();
    row.line = ++line;
    row_begin = next;
  };
  for (size_t i = begin; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field += '"';
          ++i;
        } else {
          quoted = false;
          closed_quote = true;
        }
      } else if ((c == '\n' || c == '\r') && !multiline) {
        if (row.malformed.empty()) row.malformed = "a quoted field is not closed on its line";
        quoted = false;
        if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
        end_row(i + 1);
      } else {
        if (c == '\n') ++line;
        field += c;
      }
      continue;
    }
    if (c == sep) {
      end_field();
    } else if (c == '\n' || c == '\r') {
      // A malformed row that spans lines may hold rows its quote swallowed: read it again.
      if (multiline && !row.malformed.empty() && line > row.line) return {row_begin, row.line, row.malformed};
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      end_row(i + 1);
    } else if (c == '"' && !field_started) {
      quoted = field_started = true;
    } else {
      if (closed_quote) {
        if (row.malformed.empty())
          row.malformed = fmt::format("text after the closing quote of field {}", row.fields.size() + 1);
        if (multiline && line > row.line) return {row_begin, row.line, row.malformed};
      }
      field += c;
      field_started = true;
    }
  }
  if (quoted) {
    if (multiline) return {row_begin, row.line, "a quoted field opened on this row is never closed"};
    row.malformed = "a quoted field is not closed on its line";
  }
  if (multiline && !row.malformed.empty() && line > row.line) return {row_begin, row.line, row.malformed};
  if (field_started || !row.fields.empty()) {
    end_field();
    rows.push_back(std::move(row));
  }
  return {};
}

}  // namespace

std::vector<CsvRow> parse_csv(const std::string& text, char sep) {
  std::vector<CsvRow> rows;
  const CsvRestart r = parse_csv_from(text, sep, 0, 1, /*multiline=*/true, rows);
  if (r.begin == std::string::npos) return rows;
  // A quote that swallowed line breaks belongs to a malformed row (a stray quote, or a closing
  // quote read as an escaped one): that row is counted as malformed, and the lines after its
  // first are read again one row per line, so no row after it is lost or misaligned.
  CsvRow bad;
  bad.line = r.line;
  bad.malformed = r.why;
  rows.push_back(std::move(bad));
  size_t next = text.find_first_of("\r\n", r.begin);
  if (next == std::string::npos) return rows;
  next += text.compare(next, 2, "\r\n") == 0 ? 2 : 1;
  parse_csv_from(text, sep, next, r.line + 1, /*multiline=*/false, rows);
  return rows;
}

}  // namespace torchclip::data
