// `--nproc N`: torchrun's job on one machine, for users without it. Runs the same command N times
// as ranks 0..N-1 with torchrun's environment and a free local port, forwards SIGINT/SIGTERM, and
// when one rank fails gives the others time to notice (they end with their own error at the
// collective timeout) before stopping them.
#pragma once

#include <string>
#include <vector>

namespace torchclip::dist {

struct LaunchOptions {
  int nproc = 1;
  /// After the first rank fails, how long the others may take to exit before SIGTERM (then SIGKILL).
  double grace_seconds = 30;
  /// Limits each rank's intra-op threads to cores / nproc (OMP_NUM_THREADS), as torchrun does,
  /// unless the caller set OMP_NUM_THREADS.
  bool split_threads = true;
};

/// This program again (/proc/self/exe) with `args`, minus the flags in `drop` and their values
/// ("--flag value" or "--flag=value"): the command each rank of `--nproc` runs.
std::vector<std::string> self_command(const std::vector<std::string>& args, const std::vector<std::string>& drop);

/// A TCP port that was free on 127.0.0.1 a moment ago.
int free_local_port();

/// Runs `argv` (argv[0]: the program) nproc times and waits. Returns 0 when every rank exited 0,
/// else the first failing rank's exit code (128 + signal for a signal), after printing which
/// rank failed and how.
int launch_local(const std::vector<std::string>& argv, const LaunchOptions& options);

}  // namespace torchclip::dist
