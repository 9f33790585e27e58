#include "distributed/dist.h"
#include "distributed/launch.h"
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
      .stop_after(args.get_int("stop-after", 0, 0, 1000000000000));
  const int64_t nproc = args.get_int("nproc", 1, 1, 256);
  auto overrides = args.get_all("set");
  args.finish();
  if (run.out_dir().empty()) throw UsageError("--out: the run folder is empty; give a folder, e.g. runs/mine");
  const auto env = dist::Env::from_environment();
  if (nproc > 1) {
    if (env.distributed())
      throw UsageError("--nproc starts its own ranks; it cannot be used under a launcher that set WORLD_SIZE (torchrun, srun)");
    check_layout(load_train_config(config, overrides), nproc);  // a bad config fails once, here, not in every rank
    dist::LaunchOptions lo;
    lo.nproc = static_cast<int>(nproc);
    auto cmd = dist::self_command(argv, {"--nproc"});
    cmd.insert(cmd.begin() + 1, "train");
    return dist::launch_local(cmd, lo);
  }
  auto cfg = load_train_config(config, overrides);
  auto r = train(cfg, run);
  if (r.interrupted) return kExitInterrupted;
  if (env.rank != 0) return 0;
  fmt::print("trained {} steps in {:.1f} s of training steps{}\n", r.steps, r.train_seconds,
             r.nonfinite_steps ? fmt::format(" ({} non-finite steps skipped)", r.nonfinite_steps) : "");
  fmt::print("model (checkpoint): {}\nmetrics: {}/metrics.jsonl\nplot: {}/plot.png\n", r.checkpoint, run.out_dir(),
             run.out_dir());
  return 0;
}

}  // namespace torchclip::tools
