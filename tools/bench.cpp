#include "bench/bench_model.h"
#include "subcommands.h"
#include "util/args.h"

#include <fmt/format.h>

namespace torchclip::tools {

int bench_main(const Argv& argv) {
  if (argv.empty() || argv[0] != "model") throw UsageError("bench needs a target: bench model");
  Args args(Argv(argv.begin() + 1, argv.end()));
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
  BenchModelResult r = bench_model(o);
  fmt::print("{}\n", json ? to_json(r) : to_text(r));
  return 0;
}

}  // namespace torchclip::tools
