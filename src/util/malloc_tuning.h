// glibc malloc settings for tensor workloads. LibTorch's CPU allocator calls malloc/free for
// every tensor; with glibc's defaults, blocks of a few MB (activations, gradients) are either
// mmap'd and unmapped each time or trimmed from the heap top and regrown, so each training step
// page-faults the same memory in again (about 10% of a tiny-CLIP step on 2 cores). Keeping
// freed memory in the heap removes that, at the price of not returning the peak to the OS.
#pragma once

namespace torchclip {

/// Raises the mmap and trim thresholds to 1 GiB, unless the user set glibc's own knobs
/// (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_, GLIBC_TUNABLES) or
/// TORCHCLIP_DEFAULT_MALLOC=1. Returns whether it changed anything. Call once, early in main.
bool tune_malloc_for_tensors();

/// The environment that gives another process (a Python peer in a benchmark) the same settings.
const char* malloc_tuning_environment();

}  // namespace torchclip
