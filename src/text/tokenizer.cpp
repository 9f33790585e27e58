#include "text/tokenizer.h"

#include "text/bpe_tokenizer.h"
#include "text/sentencepiece_tokenizer.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace torchclip {

std::string models_dir() {
  if (const char* env = std::getenv("TORCHCLIP_MODELS")) return env;
  return TORCHCLIP_SOURCE_DIR "/models";
}

std::vector<int32_t> pad_ids(const Tokenizer& tokenizer, std::vector<int32_t> ids, int64_t context_length) {
  if (context_length < 2) throw std::invalid_argument(fmt::format("context_length must be >= 2, got {}", context_length));
  ids.insert(ids.begin(), tokenizer.sot_id());
  ids.push_back(tokenizer.eot_id());
  if (static_cast<int64_t>(ids.size()) > context_length) {
    ids.resize(context_length);
    ids.back() = tokenizer.eot_id();
  }
  ids.resize(context_length, tokenizer.pad_id());
  return ids;
}

std::vector<int32_t> Tokenizer::encode_padded(std::string_view text, int64_t context_length) const {
  return pad_ids(*this, encode(text), context_length);
}

TokenizerFile resolve_tokenizer(const std::string& spec) {
  namespace fs = std::filesystem;
  if (spec == "clip-bpe") return {"clip-bpe", (fs::path(models_dir()) / "bpe_simple_vocab_16e6.txt.gz").string()};
  if (!fs::is_regular_file(spec)) {
    throw std::runtime_error(fmt::format(
        "tokenizer '{}' is neither 'clip-bpe' nor an existing file (.txt.gz BPE merges or SentencePiece .model)", spec));
  }
  const bool gz = spec.size() >= 3 && spec.compare(spec.size() - 3, 3, ".gz") == 0;
  return {gz ? "clip-bpe" : "sentencepiece", spec};
}

std::shared_ptr<const Tokenizer> load_tokenizer(const std::string& spec) {
  const TokenizerFile f = resolve_tokenizer(spec);
  if (f.kind == "clip-bpe") return std::make_shared<ClipBpeTokenizer>(f.path);
  return std::make_shared<SentencePieceTokenizer>(f.path);
}

at::Tensor tokenize(const Tokenizer& tokenizer, const std::vector<std::string>& texts, int64_t context_length) {
  auto out = at::empty({static_cast<int64_t>(texts.size()), context_length}, at::kLong);
  auto acc = out.accessor<int64_t, 2>();
  for (size_t b = 0; b < texts.size(); ++b) {
    auto ids = tokenizer.encode_padded(texts[b], context_length);
    for (int64_t t = 0; t < context_length; ++t) acc[b][t] = ids[t];
  }
  return out;  // [B, context_length]
}

}  // namespace torchclip
