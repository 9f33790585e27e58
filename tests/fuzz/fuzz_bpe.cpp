// libFuzzer harness: OpenAI's CLIP BPE (text/bpe_tokenizer.h) on arbitrary bytes, as captions
// and zero-shot templates reach it. encode() takes any bytes (invalid UTF-8 becomes U+FFFD);
// every id it returns must be in the vocabulary, and decode() must take them back.
#include "fuzz_support.h"
#include "text/bpe_tokenizer.h"

#include <memory>
#include <string>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto tokenizer =
      std::make_unique<torchclip::ClipBpeTokenizer>(TORCHCLIP_SOURCE_DIR "/models/bpe_simple_vocab_16e6.txt.gz");
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::vector<int32_t> ids = tokenizer->encode(text);
  for (int32_t id : ids)
    if (id < 0 || id >= tokenizer->vocab_size()) torchclip::fuzz::violated("encode: id outside the vocabulary");
  tokenizer->decode(ids);  // throws only for ids outside the vocabulary
  return 0;
}
