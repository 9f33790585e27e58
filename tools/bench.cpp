#include "bench/bench_data.h"
#include "bench/bench_model.h"
#include "bench/bench_search.h"
#include "distributed/dist.h"
#include "distributed/launch.h"
#include "io/fsutil.h"
#include "subcommands.h"
#include "util/args.h"
#include "util/cpu_allocator.h"
#include "util/json.h"

#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

namespace torchclip::tools {

int bench_data_main(Args& args) {
  BenchDataOptions o;
  o.images(args.get_int("images", o.images(), 1, 100000000))
      .workers(args.get_int("workers", o.workers(), 1, 256))
      .resize(parse_enum<ResizeMode>(args.get("resize", enum_name(o.resize())), "--resize"))
      .batch(args.get_int("batch", o.batch(), 1, 65536))
      .image_size(args.get_int("size", o.image_size(), 1, 4096))
      .dir(args.get("dir", o.dir()))
      .data(args.get("data", o.data()))
      .python(args.get("python", o.python()))
      .compare(!args.flag("no-compare"))
      .rounds(args.get_int("rounds", o.rounds(), 1, 100));
  const bool json = args.flag("json");
  args.finish();
  BenchDataResult r = bench_data(o);
  fmt::print("{}\n", json ? r.to_json() : r.to_text());
  return 0;
}

/// `bench search --type T`: a FAISS index against the exact scan (bench_ann).
int bench_ann_main(Args& args, const std::string& type) {
  BenchAnnOptions o;
  o.rows(args.get_int("rows", o.rows(), 1, 10000000000))
      .dim(args.get_int("dim", o.dim(), 1, 65536))
      .k(args.get_int("k", o.k(), 1, 1000000))
      .queries(args.get_int("queries", o.queries(), 1, 1000000))
      .clusters(args.get_int("clusters", 0, 0, 1000000000))
      .ann(AnnOptions()
               .type(type)
               .nlist(args.get_int("nlist", 0, 0, 1 << 24))
               .pq_m(args.get_int("pq-m", 0, 0, 4096))
               .hnsw_m(args.get_int("hnsw-m", 32, 4, 256))
               .train_rows(args.get_int("train-rows", 0, 0, int64_t{1} << 40)));
  // Every combination of the listed search settings, on the one index built.
  std::vector<AnnSearchOptions> searches;
  for (int64_t nprobe : args.get_int_list("nprobe", {0}, 0, 1 << 24))
    for (int64_t ef : args.get_int_list("ef-search", {0}, 0, 1 << 20))
      for (int64_t c : args.get_int_list("candidates", {400}, 1, 1000000))
        searches.push_back(AnnSearchOptions().nprobe(nprobe).ef_search(ef).candidates(c));
  o.searches(searches);
  const bool json = args.flag("json");
  args.finish();
  if (type != "flat" && type != "ivf-flat" && type != "ivf-pq" && type != "hnsw")
    throw UsageError(fmt::format("--type '{}': valid: flat, ivf-flat, ivf-pq, hnsw (without --type: the exact scan)", type));
  if (o.k() > o.rows()) throw UsageError(fmt::format("--k {} is more than the index's --rows {}", o.k(), o.rows()));
  // fp16 rows, a float chunk, and FAISS's copy: float rows (flat, ivf-flat, hnsw) or codes.
  const double per_row = 2.0 * o.dim() + (type == "ivf-pq" ? 16.0 : 4.0 * o.dim() + (type == "hnsw" ? 16.0 * o.ann().hnsw_m() : 8.0));
  const double need = static_cast<double>(o.rows()) * per_row + static_cast<double>(int64_t{1} << 30);
  if (need > 0.8 * static_cast<double>(memory_bytes()))
    throw UsageError(fmt::format("--rows {} x --dim {} with --type {} needs {:.1f} GiB, more than this machine's memory ({:.1f} GiB)",
                                 o.rows(), o.dim(), type, need / (1 << 30), static_cast<double>(memory_bytes()) / (1 << 30)));
  const auto r = bench_ann(o);
  fmt::print("{}\n", json ? r.to_json() : r.to_text());
  return 0;
}

int bench_search_main(Args& args) {
  if (const std::string type = args.get("type", ""); !type.empty()) return bench_ann_main(args, type);
  BenchSearchOptions o;
  o.rows(args.get_int("rows", o.rows(), 1, 10000000000))
      .dim(args.get_int("dim", o.dim(), 1, 65536))
      .k(args.get_int("k", o.k(), 1, 1000000))
      .queries(args.get_int("queries", o.queries(), 1, 1000000))
      .batches(args.get_int_list("batches", o.batches(), 1, 65536))
      .candidates(args.get_int("candidates", o.candidates(), 1, 1000000))
      .dtype(args.get("dtype", o.dtype()))
      .python(args.get("python", o.python()))
      .compare(!args.flag("no-compare"));
  const bool json = args.flag("json");
  args.finish();
  if (o.dtype() != "fp16" && o.dtype() != "fp32") throw UsageError("--dtype '" + o.dtype() + "': valid: fp16, fp32");
  if (o.k() > o.rows()) throw UsageError(fmt::format("--k {} is more than the index's --rows {}", o.k(), o.rows()));
  // Peak: the fp32 rows (the recall reference) beside their fp16 copy (fp32: the same tensor, then
  // int8 codes), plus the 1 GiB bandwidth buffer; PyTorch's run later needs no more. Check before
  // allocating.
  const double need = static_cast<double>(o.rows()) * static_cast<double>(o.dim()) * (o.dtype() == "fp16" ? 6.0 : 5.0) +
                      static_cast<double>(int64_t{1} << 30);
  if (need > 0.8 * static_cast<double>(memory_bytes()))
    throw UsageError(fmt::format("--rows {} x --dim {} needs {:.1f} GiB, more than this machine's memory ({:.1f} GiB)",
                                 o.rows(), o.dim(), need / (1 << 30), static_cast<double>(memory_bytes()) / (1 << 30)));
  BenchSearchResult r = bench_search(o);
  fmt::print("{}\n", json ? r.to_json() : r.to_text());
  return 0;
}

namespace {

/// `bench train --nproc N`: baselines in this process, then N ranks of the same command; rank 0
/// leaves its result in a file this process reads back.
int bench_train_scaling(const Argv& argv, BenchModelOptions o, int64_t nproc, bool json) {
  const int64_t cores = std::max(1u, std::thread::hardware_concurrency());
  const int64_t per_rank = o.threads() > 0 ? o.threads() : std::max<int64_t>(1, cores / nproc);
  o.optimizer_step(true);
  BenchScalingResult r;
  r.one_process_samples_per_second = bench_model(BenchModelOptions(o).threads(0)).samples_per_second;
  r.one_rank_samples_per_second = bench_model(BenchModelOptions(o).threads(per_rank)).samples_per_second;
  const std::string result = (std::filesystem::temp_directory_path() /
                              fmt::format("torchclip_bench_ranks_{}.json", ::getpid())).string();
  auto cmd = dist::self_command(argv, {"--nproc", "--threads"});  // argv starts with "train"
  cmd.insert(cmd.begin() + 1, "bench");
  for (const auto& a : {std::string("--threads"), std::to_string(per_rank), std::string("--rank-result"), result})
    cmd.push_back(a);
  dist::LaunchOptions lo;
  lo.nproc = static_cast<int>(nproc);
  const int rc = dist::launch_local(cmd, lo);
  if (rc != 0) throw std::runtime_error(fmt::format("bench train --nproc {}: a rank failed (exit {})", nproc, rc));
  const std::string j = read_file(result);
  std::filesystem::remove(result);
  BenchModelResult& k = r.ranks;
  k.config = o.config();
  k.precision = o.precision();
  k.device = o.device();
  k.batch = o.batch();
  k.iters = o.iters();
  k.optimizer_step = true;
  k.threads = static_cast<int64_t>(json_number(j, "threads"));
  k.world_size = static_cast<int64_t>(json_number(j, "world_size"));
  k.samples_per_second = json_number(j, "samples_per_second");
  k.step_seconds_median = json_number(j, "step_seconds_median");
  k.step_seconds_min = json_number(j, "step_seconds_min");
  k.allreduce_seconds_median = json_number(j, "allreduce_seconds_median");
  k.allreduce_hidden_share = json_number(j, "allreduce_hidden_share");
  k.loss = json_number(j, "loss");
  fmt::print("{}\n", json ? r.to_json() : r.to_text());
  return 0;
}

}  // namespace

int bench_main(const Argv& argv) {
  const std::string target = argv.empty() ? "" : argv[0];
  Args args(Argv(argv.empty() ? argv.begin() : argv.begin() + 1, argv.end()));
  if (target == "data") return bench_data_main(args);
  if (target == "search") return bench_search_main(args);
#if TORCHCLIP_HAVE_SERVE
  if (target == "serve") return bench_serve_main(args);
#endif
  if (target != "model" && target != "train")
    throw UsageError("bench needs a target: bench model | bench train | bench data | bench search | bench serve");
  BenchModelOptions o;
  o.config(args.require("config"))
      .batch(args.get_int("batch", o.batch(), 1, 65536))
      .iters(args.get_int("iters", o.iters(), 1, 1000000))
      .warmup(args.get_int("warmup", o.warmup(), 0, 1000000))
      .precision(args.get("precision", o.precision()))
      .device(args.get("device", o.device()))
      .threads(args.get_int("threads", o.threads(), 0, 1024))
      .grad_checkpointing(args.flag("grad-checkpointing"))
      .bucket_mb(args.get_double("bucket-mb", o.bucket_mb()))
      .profile(args.get("profile", ""));
  const bool json = args.flag("json");
  const int64_t nproc = args.get_int("nproc", 1, 1, 256);
  const std::string rank_result = args.get("rank-result", "");
  const auto train_options = BenchTrainOptions()
                                 .openclip_tuned_malloc(args.flag("openclip-tuned-malloc"))
                                 .openclip_compile(args.flag("openclip-compile"))
                                 .rounds(args.get_int("rounds", 1, 1, 100));
  o.progress(!json);
  args.finish();
  const auto env = dist::Env::from_environment();
  if (target == "train" && env.distributed()) {
    // One rank of `bench train --nproc N` (or of torchrun running bench train).
    auto group = dist::Group::init(env, dist::GroupOptions().cuda(o.device() == "cuda"));
    BenchModelResult r = bench_model(BenchModelOptions(o).optimizer_step(true).group(group).progress(env.rank == 0 && !json));
    if (env.rank == 0) {
      if (!rank_result.empty()) write_file_atomic(rank_result, to_json(r));
      else fmt::print("{}\n", json ? to_json(r) : to_text(r));
    }
    return 0;
  }
  if (target == "train" && nproc > 1) return bench_train_scaling(argv, o, nproc, json);
  if (target == "train") {
    BenchTrainResult r = bench_train(o, train_options);
    fmt::print("{}\n", json ? r.to_json() : r.to_text());
    return 0;
  }
  BenchModelResult r = bench_model(o);
  fmt::print("{}\n", json ? to_json(r) : to_text(r));
  return 0;
}

}  // namespace torchclip::tools
