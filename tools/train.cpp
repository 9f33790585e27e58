#include "subcommands.h"
#include "train/trainer.h"
#include "util/args.h"

#include <fmt/format.h>

#include <filesystem>

namespace torchclip::tools {

int train_main(const Argv& argv) {
  Args args(argv);
  const std::string config = args.require("config");
  TrainRunOptions run;
  run.out_dir(args.get("out", "runs/" + std::filesystem::path(config).stem().string()))
      .resume(args.get("resume", ""))
      .stop_after(args.get_int("stop-after", 0));
  auto overrides = args.get_all("set");
  args.finish();
  auto cfg = load_train_config(config, overrides);
  auto r = train(cfg, run);
  if (r.interrupted) return kExitInterrupted;
  fmt::print("trained {} steps in {:.1f} s of training steps{}\n", r.steps, r.train_seconds,
             r.nonfinite_steps ? fmt::format(" ({} non-finite steps skipped)", r.nonfinite_steps) : "");
  fmt::print("model (checkpoint): {}\nmetrics: {}/metrics.jsonl\nplot: {}/plot.png\n", r.checkpoint, run.out_dir(),
             run.out_dir());
  return 0;
}

}  // namespace torchclip::tools
