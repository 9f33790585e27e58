#include "util/malloc_tuning.h"

#include <malloc.h>

#include <cstdlib>
#include <string_view>

namespace torchclip {

namespace {
constexpr int kThreshold = 1 << 30;  // 1 GiB
}

bool tune_malloc_for_tensors() {
  for (const char* v : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES"})
    if (std::getenv(v)) return false;
  if (const char* v = std::getenv("TORCHCLIP_DEFAULT_MALLOC"); v && std::string_view(v) == "1") return false;
  return mallopt(M_MMAP_THRESHOLD, kThreshold) == 1 && mallopt(M_TRIM_THRESHOLD, kThreshold) == 1;
}

const char* malloc_tuning_environment() {
  return "MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824";
}

}  // namespace torchclip
