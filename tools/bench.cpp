#include "bench/bench_data.h"
#include "bench/bench_model.h"
#include "bench/bench_search.h"
#include "subcommands.h"
#include "util/args.h"

#include <fmt/format.h>

namespace torchclip::tools {

int bench_data_main(Args& args) {
  BenchDataOptions o;
  o.images(args.get_int("images", o.images()))
      .workers(args.get_int("workers", o.workers()))
      .resize(args.get("resize", o.resize()))
      .batch(args.get_int("batch", o.batch()))
      .image_size(args.get_int("size", o.image_size()))
      .dir(args.get("dir", o.dir()))
      .data(args.get("data", o.data()))
      .python(args.get("python", o.python()))
      .compare(!args.flag("no-compare"));
  const bool json = args.flag("json");
  args.finish();
  BenchDataResult r = bench_data(o);
  fmt::print("{}\n", json ? r.to_json() : r.to_text());
  return 0;
}

int bench_search_main(Args& args) {
  BenchSearchOptions o;
  o.rows(args.get_int("rows", o.rows()))
      .dim(args.get_int("dim", o.dim()))
      .k(args.get_int("k", o.k()))
      .queries(args.get_int("queries", o.queries()))
      .batch(args.get_int("batch", o.batch()))
      .dtype(args.get("dtype", o.dtype()))
      .python(args.get("python", o.python()))
      .compare(!args.flag("no-compare"));
  const bool json = args.flag("json");
  args.finish();
  BenchSearchResult r = bench_search(o);
  fmt::print("{}\n", json ? r.to_json() : r.to_text());
  return 0;
}

int bench_main(const Argv& argv) {
  const std::string target = argv.empty() ? "" : argv[0];
  Args args(Argv(argv.empty() ? argv.begin() : argv.begin() + 1, argv.end()));
  if (target == "data") return bench_data_main(args);
  if (target == "search") return bench_search_main(args);
  if (target != "model" && target != "train")
    throw UsageError("bench needs a target: bench model | bench train | bench data | bench search");
  BenchModelOptions o;
  o.config(args.require("config"))
      .batch(args.get_int("batch", o.batch()))
      .iters(args.get_int("iters", o.iters()))
      .warmup(args.get_int("warmup", o.warmup()))
      .precision(args.get("precision", o.precision()))
      .device(args.get("device", o.device()))
      .threads(args.get_int("threads", o.threads()));
  const bool json = args.flag("json");
  o.progress(!json);
  args.finish();
  if (target == "train") {
    BenchTrainResult r = bench_train(o);
    fmt::print("{}\n", json ? r.to_json() : r.to_text());
    return 0;
  }
  BenchModelResult r = bench_model(o);
  fmt::print("{}\n", json ? to_json(r) : to_text(r));
  return 0;
}

}  // namespace torchclip::tools
