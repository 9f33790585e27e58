// OpenAI's CLIP byte-level BPE (Radford et al. 2021), id for id as open_clip's SimpleTokenizer:
// clean (ftfy subset, html.unescape twice, whitespace, lower), pre-tokenise with
//   <start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
// (case-insensitive), map bytes to unicode, apply the merges by rank.
#pragma once

#include "text/tokenizer.h"

#include <shared_mutex>
#include <string>
#include <unordered_map>

namespace torchclip {

class ClipBpeTokenizer : public Tokenizer {
 public:
  /// Reads a gzip'd merges file (bpe_simple_vocab_16e6.txt.gz format). Throws naming the file.
  explicit ClipBpeTokenizer(const std::string& merges_path);

  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(vocab_.size()); }
  int32_t sot_id() const override { return sot_; }
  int32_t eot_id() const override { return eot_; }
  int32_t pad_id() const override { return 0; }
  std::string kind() const override { return "clip-bpe"; }

  /// open_clip's cleaning ("lower"): ftfy subset, html.unescape twice, strip, collapse
  /// whitespace, lower-case.
  static std::string clean(std::string_view text);
  /// The pre-tokeniser's pieces of already-cleaned text.
  static std::vector<std::string> pretokenize(std::string_view cleaned);

 private:
  /// BPE of one pre-token (already byte-mapped), memoised.
  std::vector<int32_t> bpe(const std::string& token) const;

  std::vector<std::string> vocab_;                     // id -> symbol
  std::unordered_map<std::string, int32_t> encoder_;   // symbol -> id
  std::unordered_map<std::string, int32_t> ranks_;     // "a b" -> merge rank
  std::string byte_to_symbol_[256];                    // byte -> its unicode symbol (UTF-8)
  std::unordered_map<std::string, uint8_t> symbol_to_byte_;
  int32_t sot_ = 0, eot_ = 0;
  mutable std::shared_mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace torchclip
