// Optional glibc malloc settings for tensor workloads. LibTorch's CPU allocator calls
// malloc/free for every tensor; with glibc's defaults, blocks of a few MB (activations,
// gradients) are mmap'd and unmapped or trimmed and regrown, so each training step page-faults
// the same memory again (about 10% of a tiny-CLIP step on 2 cores). Raising the thresholds
// removes that, but it is opt-in: when more compute threads than cores run (two jobs on one
// machine), OpenMP's spin-waiting then collapses throughput (20 steps: 65 s instead of 4 s in
// a measured case), where the page faults had been yielding the CPU.
#pragma once

namespace torchclip {

/// With TORCHCLIP_TUNE_MALLOC=1 (and none of glibc's MALLOC_*_ / GLIBC_TUNABLES variables set),
/// raises the mmap and trim thresholds to 1 GiB. Returns whether it did. Call once, early in main.
bool tune_malloc_for_tensors();

/// Whether tune_malloc_for_tensors() changed the settings in this process.
bool malloc_tuned();

/// The environment that gives another process (a Python peer in a benchmark) the same settings.
const char* malloc_tuning_environment();

}  // namespace torchclip
