// torchclip: CLIP pretraining, evaluation and serving in C++. Dispatches to a subcommand; the only
// place (with the subcommands) that turns library errors into exit codes.
#include "config.h"
#include "subcommands.h"
#include "util/args.h"

#include <c10/util/Exception.h>
#include <fmt/format.h>

#include <functional>
#include <map>

namespace {

const char* kUsage = R"(usage: torchclip <command> [flags]

commands:
  bench model   --config NAME|FILE [--batch N] [--iters N] [--warmup N] [--precision fp32|bf16]
                [--device cpu|cuda] [--threads N] [--json]
                forward+backward samples/s, model FLOPs and utilisation against this machine's matmul rate
  model info    --config NAME|FILE [--state-dict] [--json]
                parameter counts, FLOPs and state-dict names of a model config
  tokenizer train --input captions.txt --out DIR [--vocab-size N] [--model-type unigram|bpe]
                [--character-coverage F] [--keep-case]
                trains a SentencePiece model (pad 0, unk 1, start 2, end 3) into DIR/tokenizer.model
  tokenizer encode [--tokenizer clip-bpe|FILE] [--context-length N] [--text T ...]
                prints token ids, one line per text (texts from stdin when no --text)
)";

}  // namespace

int main(int argc, char** argv) {
  using torchclip::tools::Argv;
  Argv args(argv + 1, argv + argc);
  const std::map<std::string, std::function<int(const Argv&)>> commands = {
      {"bench", torchclip::tools::bench_main},
      {"model", torchclip::tools::model_info_main},
      {"tokenizer", torchclip::tools::tokenizer_main},
  };
  if (args.empty() || args[0] == "-h" || args[0] == "--help") {
    fmt::print("{}", kUsage);
    return args.empty() ? 2 : 0;
  }
  auto it = commands.find(args[0]);
  if (it == commands.end()) {
    fmt::print(stderr, "torchclip: unknown command '{}'\n{}", args[0], kUsage);
    return 2;
  }
  try {
    return it->second(Argv(args.begin() + 1, args.end()));
  } catch (const torchclip::UsageError& e) {
    fmt::print(stderr, "torchclip {}: {}\n{}", args[0], e.what(), kUsage);
    return 2;
  } catch (const torchclip::ConfigError& e) {
    fmt::print(stderr, "torchclip {}: config error: {}\n", args[0], e.what());
    return 3;
  } catch (const c10::Error& e) {
    fmt::print(stderr, "torchclip {}: {}\n", args[0], e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {  // includes file errors from tokenizers
    fmt::print(stderr, "torchclip {}: {}\n", args[0], e.what());
    return 1;
  }
}
