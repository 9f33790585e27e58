#include "util/malloc_tuning.h"

#include <malloc.h>

#include <cstdlib>
#include <string_view>

namespace torchclip {

namespace {
constexpr int kThreshold = 1 << 30;  // 1 GiB
bool g_tuned = false;
}  // namespace

bool tune_malloc_for_tensors() {
  const char* want = std::getenv("TORCHCLIP_TUNE_MALLOC");
  if (!want || std::string_view(want) != "1") return false;
  for (const char* v : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES"})
    if (std::getenv(v)) return false;
  g_tuned = mallopt(M_MMAP_THRESHOLD, kThreshold) == 1 && mallopt(M_TRIM_THRESHOLD, kThreshold) == 1;
  return g_tuned;
}

bool malloc_tuned() { return g_tuned; }

const char* malloc_tuning_environment() {
  return "MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824";
}

}  // namespace torchclip
