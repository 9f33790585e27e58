#include "text/unicode.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

namespace torchclip::text {
namespace {

struct Range {
  uint32_t lo, hi;
};
struct CodepointString {
  uint32_t cp;
  const char* utf8;
};
struct NamedString {
  const char* name;
  const char* utf8;
};
struct Decomposition {
  uint32_t cp, first, second;  // second == 0: a singleton decomposition
};
struct Composition {
  uint32_t first, second, composite;
};
struct CombiningClass {
  uint32_t lo, hi, ccc;
};

#include "text/unicode_tables.inc"

template <size_t N>
bool in(const Range (&table)[N], char32_t cp) {
  auto it = std::upper_bound(std::begin(table), std::end(table), static_cast<uint32_t>(cp),
                             [](uint32_t v, const Range& r) { return v < r.lo; });
  return it != std::begin(table) && cp <= (it - 1)->hi;
}

template <size_t N>
const char* lookup(const CodepointString (&table)[N], char32_t cp) {
  auto it = std::lower_bound(std::begin(table), std::end(table), static_cast<uint32_t>(cp),
                             [](const CodepointString& e, uint32_t v) { return e.cp < v; });
  return it != std::end(table) && it->cp == cp ? it->utf8 : nullptr;
}

template <size_t N>
const char* lookup(const NamedString (&table)[N], const std::string& name) {
  auto it = std::lower_bound(std::begin(table), std::end(table), name,
                             [](const NamedString& e, const std::string& v) { return std::strcmp(e.name, v.c_str()) < 0; });
  return it != std::end(table) && name == it->name ? it->utf8 : nullptr;
}

void append_utf8_as_u32(std::u32string& out, const char* utf8) { out += utf8_decode(utf8); }

// Hangul syllables decompose and compose algorithmically (Unicode 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

uint32_t combining_class(char32_t cp) {
  auto it = std::upper_bound(std::begin(kCombiningClass), std::end(kCombiningClass), static_cast<uint32_t>(cp),
                             [](uint32_t v, const CombiningClass& r) { return v < r.lo; });
  return it != std::begin(kCombiningClass) && cp <= (it - 1)->hi ? (it - 1)->ccc : 0;
}

void decompose(char32_t cp, std::u32string& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t s = cp - kSBase;
    out += kLBase + s / kNCount;
    out += kVBase + (s % kNCount) / kTCount;
    if (s % kTCount) out += kTBase + s % kTCount;
    return;
  }
  auto it = std::lower_bound(std::begin(kDecomposition), std::end(kDecomposition), static_cast<uint32_t>(cp),
                             [](const Decomposition& d, uint32_t v) { return d.cp < v; });
  if (it == std::end(kDecomposition) || it->cp != cp) {
    out += cp;
    return;
  }
  decompose(it->first, out);
  if (it->second) decompose(it->second, out);
}

char32_t compose(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  auto it = std::lower_bound(std::begin(kComposition), std::end(kComposition), std::make_pair(a, b),
                             [](const Composition& c, const std::pair<char32_t, char32_t>& v) {
                               return std::make_pair(static_cast<char32_t>(c.first), static_cast<char32_t>(c.second)) < v;
                             });
  return it != std::end(kComposition) && it->first == a && it->second == b ? it->composite : 0;
}

bool is_cased(char32_t cp) { return in(kCased, cp); }
bool is_case_ignorable(char32_t cp) { return in(kCaseIgnorable, cp); }

bool final_sigma(std::u32string_view s, size_t i) {
  size_t j = i;
  while (j > 0 && is_case_ignorable(s[j - 1])) --j;
  if (j == 0 || !is_cased(s[j - 1])) return false;
  size_t k = i + 1;
  while (k < s.size() && is_case_ignorable(s[k])) ++k;
  return k == s.size() || !is_cased(s[k]);
}

bool is_ascii_alnum(char32_t c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/// One numeric or named reference, as Python's html._replace_charref.
std::u32string python_charref(std::u32string_view ref) {
  std::u32string out;
  if (ref[0] == '#') {
    const bool hex = ref[1] == 'x' || ref[1] == 'X';
    uint64_t num = 0;
    bool overflow = false;
    for (size_t k = hex ? 2 : 1; k < ref.size() && ref[k] != ';'; ++k) {
      const char32_t c = ref[k];
      const uint32_t digit = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
      num = num * (hex ? 16 : 10) + digit;
      if (num > 0x10FFFF) overflow = true, num = 0x110000;
    }
    if (!overflow) {
      if (const char* r = lookup(kInvalidCharref, static_cast<char32_t>(num))) return utf8_decode(r);
    }
    if (overflow || (num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) return U"\uFFFD";
    if (in(kInvalidCodepoint, static_cast<char32_t>(num))) return U"";
    return std::u32string(1, static_cast<char32_t>(num));
  }
  const std::string name = utf8_encode(ref);
  if (const char* v = lookup(kHtml5, name)) return utf8_decode(v);
  for (size_t x = ref.size() - 1; x > 1; --x) {  // the longest known prefix, as the standard says
    if (const char* v = lookup(kHtml5, utf8_encode(ref.substr(0, x)))) {
      return utf8_decode(v) + std::u32string(ref.substr(x));
    }
  }
  return U"&" + std::u32string(ref);
}

bool is_hex(char32_t c) { return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); }
bool is_digit(char32_t c) { return c >= '0' && c <= '9'; }

/// ftfy.fixes.unescape_html: "&#?[0-9A-Za-z]{1,24};" references from ftfy's table, or numeric
/// ones Python decodes completely.
std::u32string ftfy_unescape_html(std::u32string_view s) {
  std::u32string out;
  for (size_t i = 0; i < s.size();) {
    if (s[i] == '&') {
      size_t j = i + 1;
      if (j < s.size() && s[j] == '#') ++j;
      size_t k = j;
      while (k < s.size() && k - j < 25 && is_ascii_alnum(s[k])) ++k;
      if (k > j && k - j <= 24 && k < s.size() && s[k] == ';') {
        std::u32string_view ref = s.substr(i, k + 1 - i);
        if (const char* v = lookup(kFtfyEntity, utf8_encode(ref))) {
          append_utf8_as_u32(out, v);
          i = k + 1;
          continue;
        }
        if (ref.size() > 2 && ref[1] == '#') {
          std::u32string un = html_unescape(ref);
          out += un.find(';') == std::u32string::npos ? un : std::u32string(ref);
          i = k + 1;
          continue;
        }
      }
    }
    out += s[i++];
  }
  return out;
}

/// One pass of ftfy's fixers (fix_and_explain's loop body) over one line.
std::u32string ftfy_fix_once(std::u32string_view s, bool unescape) {
  std::u32string t = unescape ? ftfy_unescape_html(s) : std::u32string(s);
  std::u32string u;
  for (char32_t c : t) {  // C1 controls, ligatures, width, curly quotes (translate maps)
    const char* r = nullptr;
    if (c >= 0x80 && c < 0xA0) r = lookup(kFtfyC1, c);
    if (!r) r = lookup(kFtfyLigature, c);
    if (!r) r = lookup(kFtfyWidth, c);
    if (r) {
      append_utf8_as_u32(u, r);
    } else if (in(kFtfySingleQuote, c)) {
      u += '\'';
    } else if (in(kFtfyDoubleQuote, c)) {
      u += '"';
    } else {
      u += c;
    }
  }
  // ftfy runs these maps one after another; applying them in one pass can leave, say, a curly
  // quote produced by the C1 map, which the caller's fixed-point loop then straightens.
  t.clear();
  for (size_t i = 0; i < u.size(); ++i) {  // line breaks
    const char32_t c = u[i];
    if (c == '\r' && i + 1 < u.size() && u[i + 1] == '\n') continue;
    t += (c == '\r' || c == 0x2028 || c == 0x2029 || c == 0x85) ? U'\n' : c;
  }
  u.clear();
  for (size_t i = 0; i < t.size(); ++i) {  // ANSI escapes: ESC [ [0-9;]* [a-zA-Z]
    if (t[i] == 0x1B && i + 1 < t.size() && t[i + 1] == '[') {
      size_t k = i + 2;
      while (k < t.size() && (is_digit(t[k]) || t[k] == ';')) ++k;
      if (k < t.size() && ((t[k] | 0x20) >= 'a' && (t[k] | 0x20) <= 'z')) {
        i = k;
        continue;
      }
    }
    if (!in(kFtfyControl, t[i])) u += t[i];
  }
  return nfc(u);
}

}  // namespace

std::string utf8_encode(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) utf8_append(out, c);
  return out;
}

std::u32string utf8_decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned char b = p[i];
    int len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
    char32_t cp = len == 1 ? b : len == 2 ? (b & 0x1F) : len == 3 ? (b & 0x0F) : (b & 0x07);
    bool ok = len > 0 && i + len <= n;
    for (int k = 1; ok && k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) ok = false;
      else cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    // Reject overlong forms, surrogates and values past U+10FFFF.
    if (ok && ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
               (cp >= 0xD800 && cp <= 0xDFFF)))
      ok = false;
    if (ok) {
      out += cp;
      i += len;
    } else {
      out += 0xFFFD;
      ++i;
    }
  }
  return out;
}

bool is_regex_letter(char32_t cp) { return cp < 0x80 ? ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') : in(kRegexLetter, cp); }
bool is_regex_number(char32_t cp) { return cp < 0x80 ? (cp >= '0' && cp <= '9') : in(kRegexNumber, cp); }
bool is_regex_space(char32_t cp) { return in(kRegexSpace, cp); }
bool is_regex_other(char32_t cp) { return in(kRegexOther, cp); }
bool is_py_space(char32_t cp) { return in(kPySpace, cp); }

char ascii_fold(char32_t cp) {
  if (cp < 0x80) return ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') ? static_cast<char>(cp | 0x20) : 0;
  const char* r = lookup(kAsciiFold, cp);
  return r ? r[0] : 0;
}

std::u32string py_lower(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const char32_t c = s[i];
    if (c < 0x80) {
      out += (c >= 'A' && c <= 'Z') ? c + 32 : c;
    } else if (c == 0x3A3) {
      out += final_sigma(s, i) ? U'\u03C2' : U'\u03C3';
    } else if (const char* r = lookup(kLower, c)) {
      append_utf8_as_u32(out, r);
    } else {
      out += c;
    }
  }
  return out;
}

std::u32string nfc(std::u32string_view s) {
  // Nothing below U+00C0 decomposes or combines.
  if (std::all_of(s.begin(), s.end(), [](char32_t c) { return c < 0xC0; })) return std::u32string(s);
  std::u32string d;
  for (char32_t c : s) decompose(c, d);
  // Canonical ordering: stable sort of each run of non-starters by combining class.
  for (size_t i = 0; i < d.size();) {
    if (combining_class(d[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && combining_class(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + i, d.begin() + j,
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
  if (d.empty()) return d;
  // Canonical composition (UAX #15).
  size_t starter = 0, out = 1;
  uint32_t last = combining_class(d[0]) ? 256 : 0;
  for (size_t i = 1; i < d.size(); ++i) {
    const char32_t c = d[i];
    const uint32_t cc = combining_class(c);
    const char32_t comp = (last < cc || last == 0) && combining_class(d[starter]) == 0 ? compose(d[starter], c) : 0;
    if (comp) {
      d[starter] = comp;
    } else {
      if (cc == 0) starter = out;
      last = cc;
      d[out++] = c;
    }
  }
  d.resize(out);
  return d;
}

std::u32string html_unescape(std::u32string_view s) {
  if (s.find('&') == std::u32string_view::npos) return std::u32string(s);
  std::u32string out;
  for (size_t i = 0; i < s.size();) {
    if (s[i] != '&') {
      out += s[i++];
      continue;
    }
    size_t j = i + 1, end = j;
    if (j < s.size() && s[j] == '#') {
      if (j + 1 < s.size() && is_digit(s[j + 1])) {
        end = j + 1;
        while (end < s.size() && is_digit(s[end])) ++end;
      } else if (j + 2 < s.size() && (s[j + 1] | 0x20) == 'x' && is_hex(s[j + 2])) {
        end = j + 2;
        while (end < s.size() && is_hex(s[end])) ++end;
      }
    } else {
      auto name_char = [](char32_t c) { return c != '\t' && c != '\n' && c != '\f' && c != ' ' && c != '<' && c != '&' && c != '#' && c != ';'; };
      while (end < s.size() && end - j < 32 && name_char(s[end])) ++end;
    }
    if (end == j) {  // no reference here
      out += s[i++];
      continue;
    }
    if (end < s.size() && s[end] == ';') ++end;
    out += python_charref(s.substr(j, end - j));
    i = end;
  }
  return out;
}

std::u32string ftfy_fix_text(std::u32string_view s) {
  std::u32string out;
  bool unescape = true;  // 'auto': off from the first line containing '<' onwards
  for (size_t pos = 0; pos < s.size();) {
    size_t brk = s.find('\n', pos);
    brk = brk == std::u32string_view::npos ? s.size() : brk + 1;
    std::u32string seg(s.substr(pos, brk - pos));
    if (seg.find('<') != std::u32string::npos) unescape = false;
    for (;;) {
      std::u32string fixed = ftfy_fix_once(seg, unescape);
      if (fixed == seg) break;
      seg = std::move(fixed);
    }
    out += seg;
    pos = brk;
  }
  return out;
}

}  // namespace torchclip::text
