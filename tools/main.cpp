// torchclip: CLIP pretraining, evaluation and serving in C++. Dispatches to a subcommand; the only
// place (with the subcommands) that turns library errors into exit codes: 2 for usage (a flag,
// its value, a data spec, the environment: UsageError and std::invalid_argument), 3 for a config
// file, 1 for everything that went wrong at run time, 5 for a training stopped by a signal.
#include "config/model_config.h"
#include "subcommands.h"
#include "util/args.h"
#include "util/cpu_allocator.h"

#include <c10/util/Exception.h>
#include <fmt/format.h>
#if TORCHCLIP_HAVE_OPENCV
#include <opencv2/core.hpp>
#include <opencv2/core/utility.hpp>
#endif

#include <cstring>
#include <functional>
#include <map>

namespace {

const char* kUsage = R"(usage: torchclip <command> [flags]

commands:
  train         --config FILE [--out RUN_DIR] [--resume auto|CHECKPOINT] [--set key=value ...] [--nproc N]
                pretrains a CLIP; writes RUN_DIR/{train_config.yaml, metrics.jsonl, plot.png, checkpoints/}.
                Exit code 5: stopped by SIGINT/SIGTERM after saving a checkpoint.
                Data parallel (c10d): --nproc N starts N local ranks; under torchrun/srun it reads
                RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (see README, "Multi-node").
  (eval, zeroshot, embed, index and search also take --device auto|cpu|cuda|cuda:N; auto: a GPU when there is one)
  eval          --model DIR --data SOURCE [--classes FILE --templates FILE] [--resize pil|fast] [--json] [--csv-... flags]
                zero-shot top-1/top-5 and image<->text retrieval (R@1/5/10, mean/median rank);
                with --query TEXT [--query ...] [--k 8] [--grid out.png]: the data's images closest to each text
  zeroshot      --model DIR (--classes FILE|a,b,c [--templates FILE] | --classifier FILE)
                (--images PATH... | --data SOURCE) [--top-k 5] [--json|--csv] [--confusion PREFIX]
                [--save-classifier FILE] [--max-rows 50]
                classifies images into named classes (templates: OpenAI's 80 ImageNet ones by default);
                with labels (CSV label column, ImageFolder tree): top-1/top-5, per-class accuracy,
                PREFIX.csv and PREFIX.png confusion matrix
  embed         --model DIR (--images PATH... | --data SOURCE | --texts FILE|-) --out FILE.npy|FILE.safetensors
                [--dtype fp32|fp16]   normalised embeddings in input order; FILE.json lists the inputs
  index         --model DIR (--images PATH... | --data SOURCE) --out INDEX [--dtype fp16|fp32|int8] [--measure-model] [--json]
                [--type auto|exact|flat|ivf-flat|ivf-pq|hnsw] [--nlist N] [--pq-m M] [--hnsw-m M] [--train-rows N] [--retrain]
                embeds images into a searchable index; rerun to add new/changed files and prune vanished ones;
                int8 adds int8 rows (half of fp16's bytes) that search scans before an exact fp16 rerank;
                --type: a FAISS index beside it (INDEX.faiss; auto: exact up to 100k rows, hnsw, then ivf-pq);
                an update refills the trained FAISS index (no retraining unless --retrain or new parameters);
                --trained SHARD0: reuse its IVF training (shards built apart), then
  index         --merge SHARD0 --merge SHARD1 ... --out INDEX [--json]
                one index from shards of one training: rows sorted by path, FAISS lists on disk (memory-mapped)
  search        --index INDEX --model DIR [--query TEXT ... | --image PATH] [--k 10] [--json]
                [--gallery out.html] [--grid out.png] [--candidates N] [--exact] [--nprobe N] [--ef-search N]
                top-k (exact; int8 and FAISS ivf-pq indexes rerank --candidates rows exactly, 100 and 400 by
                default; --exact scans every row); queries from stdin when none given
  serve         --model DIR --index INDEX [--host 127.0.0.1] [--port 8080] [--api-key-file F] [--threads 8]
                [--batch-wait-ms 2] [--max-batch 64] [--request-timeout 30] [--classifier NAME=FILE ...]
                [--candidates N] [--nprobe N] [--ef-search N]
                [--max-body-mb 32] [--max-k 1000] [--max-query-chars 2000] [--max-inputs 256] [--max-image-mpixels 40]
                the retrieval service: POST /v1/search, /v1/embeddings (OpenAI's shape), /v1/zeroshot;
                GET /health, /metrics (Prometheus), / (a search page), /v1/thumbnail/ROW (indexed files only).
                Concurrent text queries share one text-tower call; SIGTERM finishes in-flight requests, then exits
  convert       --openclip-config NAME|FILE --weights open_clip.safetensors --out MODEL_DIR [--image-size N]
                an open_clip checkpoint (safetensors) as a torchclip model folder (ViT positions resized for N)
  export        --model MODEL_DIR --out PREFIX
                PREFIX.safetensors + PREFIX.json that open_clip loads (open_clip.CLIP(**json))
  prepare fashion-mnist [--out DIR] [--format csv|wds] [--source DIR]
                writes data/fashion-mnist/: PNGs, train.csv, test.csv, classes, templates (and shards)
  data check    --data SOURCE [--json] [--workers N] [--tokenizer T] [--context-length N]
                [--csv-img-key K] [--csv-caption-key K] [--csv-label-key K] [--csv-separator C]
                reads a whole dataset as training would: usable and skipped samples by reason,
                image sizes, caption lengths. SOURCE: a .csv/.tsv, tar shards ({a..b}, ::), synthetic:N,
                a tensor file (.safetensors from data pack)
  data pack     --data SOURCE --out FILE.safetensors [--image-size 224] [--resize pil|fast] [--workers N] [--json]
                decodes SOURCE once into uint8 images (centre crop at --image-size) with captions and labels;
                train, eval and zeroshot read FILE.safetensors as a source, with no image decoder
  bench model   --config NAME|FILE [--batch N] [--iters N] [--warmup N] [--precision fp32|bf16]
                [--device cpu|cuda|cuda:N] [--threads N] [--grad-checkpointing] [--profile TRACE.json] [--json]
                forward+backward samples/s, model FLOPs and utilisation against this machine's matmul rate
  bench train   --config NAME|FILE [--batch N] [--iters N] [--precision fp32|bf16] [--device cpu|cuda|cuda:N] [--threads N]
                [--nproc N [--bucket-mb MB]] [--openclip-compile] [--json]
                [--rounds N] [--openclip-tuned-malloc] [--grad-checkpointing]
                a whole training step (with AdamW) for torchclip and open_clip on the same model, and the ratio
                (--rounds N: alternate them N times, median ratio; --openclip-tuned-malloc: open_clip once
                more with glibc's mmap/trim thresholds at 1 GiB);
                with --nproc N: N data-parallel ranks (batch per rank) against 1 process, scaling efficiency
  bench data    [--images N] [--workers N] [--batch N] [--size S] [--resize pil|fast] [--dir DIR] [--data CSV] [--rounds N]
                [--no-compare] [--json]
                images/s of torchclip's loader and of open_clip's Python pipeline on the same JPEGs
  bench search  [--rows 1000000] [--dim 512] [--k 10] [--queries 20] [--batches 1,16,256] [--candidates 100] [--dtype fp16|fp32] [--no-compare] [--json]
                ms per top-k query on a synthetic index, and the same search in PyTorch from Python
  bench search  --type flat|ivf-flat|ivf-pq|hnsw [--rows 1000000] [--dim 512] [--k 10] [--queries 200] [--clusters N]
                [--nlist N] [--pq-m M] [--hnsw-m M] [--train-rows N] [--nprobe N,N...] [--ef-search N,N...]
                [--candidates 400,...] [--json]
                a FAISS index over synthetic clustered embeddings: build time, bytes, and for each listed search
                setting p50/p99 ms per query and recall@k against the exact scan of the same rows
  bench serve   [--url http://127.0.0.1:8080] [--clients 8] [--seconds 10] [--warmup 2] [--k 10] [--queries FILE]
                [--api-key-file F] [--json]
                load test of a running server: req/s, p50/p95/p99 latency, errors, its memory before and after
  model info    --config NAME|FILE [--state-dict] [--json]
                parameter counts, FLOPs and state-dict names of a model config
  tokenizer train --input captions.txt --out DIR [--vocab-size N] [--model-type unigram|bpe]
                [--character-coverage F] [--keep-case]
                trains a SentencePiece model (pad 0, unk 1, start 2, end 3) into DIR/tokenizer.model
  tokenizer encode [--tokenizer clip-bpe|FILE] [--context-length N] [--text T ...]
                prints token ids, one line per text (texts from stdin when no --text)
)";

/// The usage blocks of `command` (every block whose first word it is: "bench" gives bench model,
/// bench train, ...), for `torchclip COMMAND --help`.
std::string command_usage(const std::string& command) {
  std::string out, line;
  bool in_block = false;
  for (size_t start = 0; start < std::strlen(kUsage);) {
    const char* text = kUsage + start;
    const char* nl = std::strchr(text, '\n');
    line.assign(text, nl ? static_cast<size_t>(nl - text) : std::strlen(text));
    start += line.size() + 1;
    if (line.size() > 2 && line[0] == ' ' && line[1] == ' ' && line[2] != ' ') {  // a block's first line
      const std::string word = line.substr(2, line.find(' ', 2) - 2);
      in_block = word == command;
    }
    if (in_block) out += line + "\n";
  }
  return "usage: torchclip " + command + " [flags]\n" + out;
}

}  // namespace

int main(int argc, char** argv) {
  // Parallelism comes from the data loader's workers; OpenCV's own thread pool would
  // oversubscribe the cores. A process-wide choice, so the program makes it, not the library.
#if TORCHCLIP_HAVE_OPENCV
  cv::setNumThreads(0);
#endif
  try {
    torchclip::install_cpu_caching_allocator();
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 2;
  }
  using torchclip::tools::Argv;
  Argv args(argv + 1, argv + argc);
  const std::map<std::string, std::function<int(const Argv&)>> commands = {
      {"bench", torchclip::tools::bench_main},
      {"model", torchclip::tools::model_info_main},
      {"tokenizer", torchclip::tools::tokenizer_main},
      {"data", torchclip::tools::data_main},
      {"prepare", torchclip::tools::prepare_main},
      {"train", torchclip::tools::train_main},
      {"eval", torchclip::tools::eval_main},
      {"convert", torchclip::tools::convert_main},
      {"export", torchclip::tools::export_main},
      {"zeroshot", torchclip::tools::zeroshot_main},
      {"embed", torchclip::tools::embed_main},
      {"index", torchclip::tools::index_main},
      {"search", torchclip::tools::search_main},
#if TORCHCLIP_HAVE_SERVE
      {"serve", torchclip::tools::serve_main},
#endif
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
  // `CMD --help`, or `CMD WORD --help` for the two-word commands (data pack, bench train, ...),
  // before any flag is checked; not a value ("--text -h" encodes "-h").
  auto is_help = [](const std::string& a) { return a == "--help" || a == "-h"; };
  if ((args.size() > 1 && is_help(args[1])) || (args.size() > 2 && args[1][0] != '-' && is_help(args[2]))) {
    fmt::print("{}", command_usage(args[0]));
    return 0;
  }
  try {
    return it->second(Argv(args.begin() + 1, args.end()));
  } catch (const torchclip::UsageError& e) {
    fmt::print(stderr, "torchclip {}: {}\n{}", args[0], e.what(), command_usage(args[0]));
    return 2;
  } catch (const std::invalid_argument& e) {  // a flag's value, a data spec or the environment: the user's input
    fmt::print(stderr, "torchclip {}: {}\n(torchclip {} --help lists the flags)\n", args[0], e.what(), args[0]);
    return 2;
  } catch (const torchclip::ConfigError& e) {
    fmt::print(stderr, "torchclip {}: config error: {}\n", args[0], e.what());
    return 3;
  }
#if TORCHCLIP_HAVE_OPENCV
  catch (const cv::Exception& e) {  // an image operation the library did not anticipate: OpenCV's words, not its source path
    fmt::print(stderr, "torchclip {}: image operation failed: {} (OpenCV {})\n", args[0], e.err, e.func);
    return 1;
  }
#endif
  catch (const c10::Error& e) {
    fmt::print(stderr, "torchclip {}: {}\n", args[0], e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {  // includes file errors from tokenizers
    fmt::print(stderr, "torchclip {}: {}\n", args[0], e.what());
    return 1;
  }
}
