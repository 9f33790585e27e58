#include "text/sentencepiece_tokenizer.h"

#include <fmt/format.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <filesystem>
#include <stdexcept>

namespace torchclip {

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_path)
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  auto status = sp_->Load(model_path);
  if (!status.ok()) {
    throw std::runtime_error(fmt::format("{}: cannot load the SentencePiece model: {}", model_path, status.ToString()));
  }
  if (sp_->bos_id() < 0 || sp_->eos_id() < 0) {
    throw std::runtime_error(fmt::format(
        "{}: the SentencePiece model defines no bos/eos ids, which mark text start and end; retrain it with "
        "`torchclip tokenizer train` (or --bos_id/--eos_id)", model_path));
  }
  pad_ = sp_->pad_id() >= 0 ? sp_->pad_id() : 0;
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  auto status = sp_->Encode(text, &ids);
  if (!status.ok()) throw std::runtime_error("SentencePiece encode failed: " + status.ToString());
  return {ids.begin(), ids.end()};
}

std::string SentencePieceTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size())
      throw std::out_of_range(fmt::format("decode: id {} is outside the vocabulary [0, {})", id, vocab_size()));
  }
  auto status = sp_->Decode(std::vector<int>(ids.begin(), ids.end()), &text);
  if (!status.ok()) throw std::runtime_error("SentencePiece decode failed: " + status.ToString());
  return text;
}

int64_t SentencePieceTokenizer::vocab_size() const { return sp_->GetPieceSize(); }
int32_t SentencePieceTokenizer::sot_id() const { return sp_->bos_id(); }
int32_t SentencePieceTokenizer::eot_id() const { return sp_->eos_id(); }
int32_t SentencePieceTokenizer::pad_id() const { return pad_; }

std::string train_sentencepiece(const SentencePieceTrainOptions& o) {
  namespace fs = std::filesystem;
  if (!fs::is_regular_file(o.input())) throw std::runtime_error(fmt::format("{}: no such input file", o.input()));
  if (o.model_type() != "unigram" && o.model_type() != "bpe")
    throw std::invalid_argument(fmt::format("model type must be unigram or bpe, got '{}'", o.model_type()));
  fs::create_directories(o.out());
  const std::string prefix = (fs::path(o.out()) / "tokenizer").string();
  const std::string args = fmt::format(
      "--input={} --model_prefix={} --vocab_size={} --model_type={} --character_coverage={} "
      "--normalization_rule_name={} --pad_id=0 --unk_id=1 --bos_id=2 --eos_id=3 --input_sentence_size={} "
      "--shuffle_input_sentence=true --minloglevel=1 --num_threads=2 --hard_vocab_limit=false",
      o.input(), prefix, o.vocab_size(), o.model_type(), o.character_coverage(),
      o.lowercase() ? "nmt_nfkc_cf" : "nmt_nfkc", o.input_sentence_size());
  auto status = sentencepiece::SentencePieceTrainer::Train(args);
  if (!status.ok()) {
    throw std::runtime_error(fmt::format("training a SentencePiece model on {} failed: {}", o.input(), status.ToString()));
  }
  return prefix + ".model";
}

}  // namespace torchclip
