#include "subcommands.h"
#include "text/sentencepiece_tokenizer.h"
#include "text/tokenizer.h"
#include "util/args.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <iostream>

namespace torchclip::tools {

int tokenizer_main(const Argv& argv) {
  const std::string verb = argv.empty() ? "" : argv[0];
  Args args(Argv(argv.empty() ? argv.begin() : argv.begin() + 1, argv.end()));
  if (verb == "train") {
    SentencePieceTrainOptions o;
    o.input(args.require("input"))
        .out(args.require("out"))
        .vocab_size(args.get_int("vocab-size", o.vocab_size(), 1, 10000000))
        .model_type(args.get("model-type", o.model_type()))
        .character_coverage(args.get_double("character-coverage", o.character_coverage()))
        .lowercase(!args.flag("keep-case"));
    args.finish();
    const std::string model = train_sentencepiece(o);
    auto tok = load_tokenizer(model);
    fmt::print("wrote {} ({} pieces; pad {}, start {}, end {})\n", model, tok->vocab_size(), tok->pad_id(),
               tok->sot_id(), tok->eot_id());
    fmt::print("for a model config: text_cfg: {{vocab_size: {}, pad_id: {}, pool_type: eos, eos_id: {}}}\n",
               tok->vocab_size(), tok->pad_id(), tok->eot_id());
    return 0;
  }
  if (verb == "encode") {
    auto tok = load_tokenizer(args.get("tokenizer", "clip-bpe"));
    const int64_t ctx = args.get_int("context-length", 0, 0, 4096);
    auto texts = args.get_all("text");
    args.finish();
    if (texts.empty()) {  // one text per line from stdin
      for (std::string line; std::getline(std::cin, line);) texts.push_back(line);
    }
    for (const auto& t : texts) {
      auto ids = ctx > 0 ? tok->encode_padded(t, ctx) : tok->encode(t);
      fmt::print("{}\n", fmt::join(ids, " "));
    }
    return 0;
  }
  throw UsageError("tokenizer needs a verb: tokenizer train | tokenizer encode");
}

}  // namespace torchclip::tools
