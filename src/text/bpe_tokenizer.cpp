#include "text/bpe_tokenizer.h"

#include "text/unicode.h"

#include <fmt/format.h>
#include <zlib.h>

#include <climits>
#include <mutex>
#include <stdexcept>

namespace torchclip {
namespace {

constexpr int kMergeCount = 49152 - 256 - 2;  // lines 1..48894 of the merges file

std::string read_gzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error(fmt::format("{}: cannot open the BPE merges file", path));
  std::string data;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) data.append(buf, n);
  int err = 0;
  const char* msg = gzerror(f, &err);
  std::string error = err < 0 ? msg : "";
  gzclose(f);
  if (!error.empty()) throw std::runtime_error(fmt::format("{}: corrupt gzip data: {}", path, error));
  return data;
}

/// GPT-2's reversible byte -> printable unicode map (open_clip's bytes_to_unicode), in its order.
std::vector<std::pair<int, char32_t>> bytes_to_unicode() {
  std::vector<std::pair<int, char32_t>> out;
  std::vector<bool> printable(256, false);
  for (int b = '!'; b <= '~'; ++b) printable[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
  for (int b = 0; b < 256; ++b)
    if (printable[b]) out.emplace_back(b, static_cast<char32_t>(b));
  int n = 0;
  for (int b = 0; b < 256; ++b)
    if (!printable[b]) out.emplace_back(b, static_cast<char32_t>(256 + n++));
  return out;
}

}  // namespace

ClipBpeTokenizer::ClipBpeTokenizer(const std::string& path) {
  const std::string data = read_gzip(path);
  std::vector<std::string> lines;
  for (size_t pos = 0; pos <= data.size();) {
    size_t nl = data.find('\n', pos);
    if (nl == std::string::npos) nl = data.size();
    lines.push_back(data.substr(pos, nl - pos));
    pos = nl + 1;
  }
  if (static_cast<int>(lines.size()) < kMergeCount + 1) {
    throw std::runtime_error(fmt::format("{}: expected at least {} merge lines after the header, found {}", path,
                                         kMergeCount, lines.size() - 1));
  }
  for (const auto& [byte, cp] : bytes_to_unicode()) {
    std::string sym = text::utf8_encode(std::u32string(1, cp));
    byte_to_symbol_[byte] = sym;
    symbol_to_byte_[sym] = static_cast<uint8_t>(byte);
    vocab_.push_back(sym);
  }
  for (int i = 0; i < 256; ++i) vocab_.push_back(vocab_[i] + "</w>");
  for (int i = 1; i <= kMergeCount; ++i) {
    const std::string& line = lines[i];
    const size_t sp = line.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 >= line.size()) {
      throw std::runtime_error(fmt::format("{}:{}: a merge line must be two symbols separated by a space, got '{}'",
                                           path, i + 1, line));
    }
    ranks_[line] = i - 1;
    vocab_.push_back(line.substr(0, sp) + line.substr(sp + 1));
  }
  vocab_.push_back("<start_of_text>");
  vocab_.push_back("<end_of_text>");
  for (size_t i = 0; i < vocab_.size(); ++i) encoder_.emplace(vocab_[i], static_cast<int32_t>(i));
  sot_ = encoder_.at("<start_of_text>");
  eot_ = encoder_.at("<end_of_text>");
}

std::string ClipBpeTokenizer::clean(std::string_view text) {
  std::u32string t = text::ftfy_fix_text(text::utf8_decode(text));
  t = text::html_unescape(text::html_unescape(t));
  // strip, then " ".join(text.split()): runs of Python whitespace become one space.
  std::u32string joined;
  bool pending_space = false;
  for (char32_t c : t) {
    if (text::is_py_space(c)) {
      pending_space = !joined.empty();
    } else {
      if (pending_space) joined += U' ';
      pending_space = false;
      joined += c;
    }
  }
  return text::utf8_encode(text::py_lower(joined));
}

std::vector<std::string> ClipBpeTokenizer::pretokenize(std::string_view cleaned) {
  const std::u32string s = text::utf8_decode(cleaned);
  const size_t n = s.size();
  auto matches = [&](size_t i, std::u32string_view lit) {  // case-insensitive literal at i
    if (i + lit.size() > n) return false;
    for (size_t k = 0; k < lit.size(); ++k) {
      const char32_t l = lit[k];
      const bool letter = l >= 'a' && l <= 'z';
      if (letter ? text::ascii_fold(s[i + k]) != static_cast<char>(l) : s[i + k] != l) return false;
    }
    return true;
  };
  static const std::u32string_view kLiterals[] = {U"<start_of_text>", U"<end_of_text>", U"'s", U"'t", U"'re",
                                                  U"'ve", U"'m", U"'ll", U"'d"};
  auto other = [](char32_t c) { return text::is_regex_other(c); };
  std::vector<std::string> out;
  for (size_t i = 0; i < n;) {
    size_t end = i;
    for (auto lit : kLiterals) {
      if (matches(i, lit)) {
        end = i + lit.size();
        break;
      }
    }
    if (end == i) {
      if (text::is_regex_letter(s[i])) {
        while (end < n && text::is_regex_letter(s[end])) ++end;
      } else if (text::is_regex_number(s[i])) {
        end = i + 1;
      } else if (other(s[i])) {
        while (end < n && other(s[end])) ++end;
      } else {
        ++i;  // whitespace (or a character no alternative matches): not part of any piece
        continue;
      }
    }
    out.push_back(text::utf8_encode(s.substr(i, end - i)));
    i = end;
  }
  return out;
}

std::vector<int32_t> ClipBpeTokenizer::bpe(const std::string& token) const {
  {
    std::shared_lock lock(cache_mutex_);
    auto it = cache_.find(token);
    if (it != cache_.end()) return it->second;
  }
  // Split the byte-mapped token into its unicode symbols; the last one carries "</w>".
  std::vector<std::string> word;
  for (size_t i = 0; i < token.size();) {
    const auto c = static_cast<unsigned char>(token[i]);
    const size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    word.push_back(token.substr(i, len));
    i += len;
  }
  word.back() += "</w>";
  while (word.size() > 1) {
    int best = INT_MAX;
    size_t best_i = 0;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      auto it = ranks_.find(word[i] + " " + word[i + 1]);
      if (it != ranks_.end() && it->second < best) best = it->second, best_i = i;
    }
    if (best == INT_MAX) break;
    const std::string first = word[best_i], second = word[best_i + 1];
    std::vector<std::string> merged;
    merged.reserve(word.size());
    for (size_t i = 0; i < word.size();) {  // every non-overlapping occurrence, left to right
      if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
        merged.push_back(first + second);
        i += 2;
      } else {
        merged.push_back(word[i++]);
      }
    }
    word = std::move(merged);
  }
  std::vector<int32_t> ids;
  ids.reserve(word.size());
  for (const auto& sym : word) ids.push_back(encoder_.at(sym));
  std::unique_lock lock(cache_mutex_);
  if (cache_.size() > 500000) cache_.clear();  // bound memory on open-vocabulary streams
  cache_.emplace(token, ids);
  return ids;
}

std::vector<int32_t> ClipBpeTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  for (const std::string& piece : pretokenize(clean(text))) {
    std::string mapped;
    for (unsigned char b : piece) mapped += byte_to_symbol_[b];
    if (mapped == "<start_of_text>") {
      ids.push_back(sot_);
    } else if (mapped == "<end_of_text>") {
      ids.push_back(eot_);
    } else {
      auto p = bpe(mapped);
      ids.insert(ids.end(), p.begin(), p.end());
    }
  }
  return ids;
}

std::string ClipBpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) {
      throw std::out_of_range(fmt::format("decode: id {} is outside the vocabulary [0, {})", id, vocab_size()));
    }
    const std::u32string sym = text::utf8_decode(vocab_[id]);
    for (char32_t c : sym) bytes += static_cast<char>(symbol_to_byte_.at(text::utf8_encode(std::u32string(1, c))));
  }
  std::string text = text::utf8_encode(text::utf8_decode(bytes));  // invalid UTF-8 -> U+FFFD
  std::string out;
  for (size_t pos = 0;;) {
    size_t w = text.find("</w>", pos);
    out += text.substr(pos, w == std::string::npos ? std::string::npos : w - pos);
    if (w == std::string::npos) break;
    out += ' ';
    pos = w + 4;
  }
  return out;
}

}  // namespace torchclip
