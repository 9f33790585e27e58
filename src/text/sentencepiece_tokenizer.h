// SentencePiece (Kudo & Richardson 2018) models behind the Tokenizer interface, and training
// of new ones for captions in any language.
#pragma once

#include "text/tokenizer.h"

#include <torch/arg.h>

#include <memory>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace torchclip {

class SentencePieceTokenizer : public Tokenizer {
 public:
  /// Loads a .model file; it must define bos (start) and eos (end) ids. Throws naming the file.
  explicit SentencePieceTokenizer(const std::string& model_path);
  ~SentencePieceTokenizer() override;

  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override;
  int32_t sot_id() const override;
  int32_t eot_id() const override;
  int32_t pad_id() const override;
  std::string kind() const override { return "sentencepiece"; }

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  int32_t pad_ = 0;
};

struct SentencePieceTrainOptions {
  /// One caption per line, UTF-8.
  TORCH_ARG(std::string, input);
  /// Output folder; receives tokenizer.model and tokenizer.vocab.
  TORCH_ARG(std::string, out);
  TORCH_ARG(int64_t, vocab_size) = 8000;
  /// "unigram" or "bpe".
  TORCH_ARG(std::string, model_type) = "unigram";
  /// Case-fold during normalisation (nmt_nfkc_cf) so "Dog" and "dog" share pieces.
  TORCH_ARG(bool, lowercase) = true;
  TORCH_ARG(double, character_coverage) = 0.9995;
  /// Sentences sampled for training when the input has more (0: all).
  TORCH_ARG(int64_t, input_sentence_size) = 2000000;
};

/// Trains a model with pad=0, unk=1, bos(start)=2, eos(end)=3; returns the .model path.
/// Use text_cfg pool_type "eos" with eos_id 3 for models that use it.
std::string train_sentencepiece(const SentencePieceTrainOptions& options);

}  // namespace torchclip
