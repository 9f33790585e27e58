// Parity of the CLIP BPE tokenizer with open_clip on the fixture texts written by
// tests/golden/make_tokenizer_golden.py.
#include "text/tokenizer.h"
#include "text/unicode.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iostream>
#include <sstream>

namespace torchclip {
namespace {

const Tokenizer& clip_bpe() {
  static auto tok = load_tokenizer("clip-bpe");
  return *tok;
}

/// Reads a .inp line: '\\' and '\u{HEX}' escapes.
std::string unescape(const std::string& line) {
  std::string out;
  for (size_t i = 0; i < line.size(); ++i) {
    if (line[i] != '\\') {
      out += line[i];
    } else if (line[i + 1] == '\\') {
      out += '\\';
      ++i;
    } else {  // \u{HEX}
      size_t close = line.find('}', i);
      text::utf8_append(out, static_cast<char32_t>(std::stoul(line.substr(i + 3, close - i - 3), nullptr, 16)));
      i = close;
    }
  }
  return out;
}

std::vector<std::string> lines(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::string> out;
  for (std::string l; std::getline(f, l);) out.push_back(l);
  return out;
}

/// How many lines of `name`.inp tokenize to `name`.out.
size_t matching_lines(const std::string& name, size_t* total) {
  const std::string dir = TORCHCLIP_SOURCE_DIR "/tests/golden/tokenizer/";
  auto inp = lines(dir + name + ".inp"), out = lines(dir + name + ".out");
  EXPECT_EQ(inp.size(), out.size()) << name;
  *total = inp.size();
  size_t same = 0;
  for (size_t i = 0; i < std::min(inp.size(), out.size()); ++i) {
    std::vector<int32_t> expected;
    std::istringstream ss(out[i]);
    for (int32_t id; ss >> id;) expected.push_back(id);
    if (clip_bpe().encode_padded(unescape(inp[i]), 77) == expected) {
      ++same;
    } else {
      ADD_FAILURE() << name << ".inp line " << i + 1 << ": " << inp[i];
    }
  }
  return same;
}

TEST(ClipBpeGolden, IdsIdenticalToOpenClipOnEveryFixtureText) {
  size_t total = 0;
  const size_t same = matching_lines("clip_bpe", &total);
  EXPECT_GE(total, 1000u);
  std::cout << "[ parity ] " << same << " / " << total << " texts give open_clip's ids\n";
}

TEST(ClipBpeGolden, MojibakeTextsGiveOpenClipsIdsWithoutFixEncoding) {
  // The documented difference: ftfy.fix_encoding is not implemented.
  size_t total = 0;
  EXPECT_EQ(matching_lines("clip_bpe_mojibake", &total), total);
  EXPECT_GE(total, 1u);
}

}  // namespace
}  // namespace torchclip
