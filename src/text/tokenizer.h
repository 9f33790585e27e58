// Text -> token ids, behind one interface: OpenAI's CLIP BPE (open_clip's SimpleTokenizer) or a
// SentencePiece model.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace at {
class Tensor;
}

namespace torchclip {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  /// Ids of `text` without start/end markers.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int32_t sot_id() const = 0;
  virtual int32_t eot_id() const = 0;
  virtual int32_t pad_id() const = 0;
  /// "clip-bpe" or "sentencepiece".
  virtual std::string kind() const = 0;

  /// [sot] + encode(text) + [eot], cut to `context_length` with eot kept last (OpenCLIP's
  /// truncation), then padded with pad_id to exactly `context_length`.
  std::vector<int32_t> encode_padded(std::string_view text, int64_t context_length) const;
};

/// [sot] + ids + [eot] with OpenCLIP's truncation and padding (what encode_padded does to encode()).
std::vector<int32_t> pad_ids(const Tokenizer& tokenizer, std::vector<int32_t> ids, int64_t context_length);

/// What a tokenizer spec names: its kind ("clip-bpe" or "sentencepiece") and its file.
struct TokenizerFile {
  std::string kind, path;
};

/// Resolves a spec: "clip-bpe" (the vocabulary shipped in models/), a .txt.gz BPE merges file or
/// a SentencePiece .model file. Throws naming the spec when it is none of these.
TokenizerFile resolve_tokenizer(const std::string& spec);

/// Loads a tokenizer: "clip-bpe" (the vocabulary shipped in models/), a path to a
/// bpe_simple_vocab_16e6.txt.gz-style file, or a SentencePiece .model file.
std::shared_ptr<const Tokenizer> load_tokenizer(const std::string& spec);

/// A batch of texts -> int64 tensor [B, context_length].
at::Tensor tokenize(const Tokenizer& tokenizer, const std::vector<std::string>& texts, int64_t context_length);

/// The folder holding shipped assets (env TORCHCLIP_MODELS, else the source tree's models/).
std::string models_dir();

}  // namespace torchclip
