#include "util/cpu_allocator.h"

#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>
#include <pthread.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>
#include <unordered_set>

namespace torchclip {

namespace {

// Every block starts with this header; the data follows at LibTorch's 64-byte alignment. The
// deleter finds the owner and size class there, so data == context and the raw API works.
struct alignas(64) BlockHeader {
  CachingCpuAllocator* owner;
  std::size_t cls;  // 0: not cached, freed straight to malloc
};
constexpr std::size_t kHeader = sizeof(BlockHeader);
static_assert(kHeader == 64, "the data must keep LibTorch's 64-byte alignment");

BlockHeader* header_of(void* data) { return static_cast<BlockHeader*>(data) - 1; }

// The data pointers of every block this process's caching allocators made and have not given
// back to malloc. oneDNN's glue frees through whatever GetAllocator(CPU)->raw_deallocate is at
// that moment, so a buffer LibTorch's default allocator (posix_memalign) made before
// installation can arrive here: it is not in the set and goes to free(), as the default
// allocator would, without a byte before it being read (the bytes before a foreign buffer are
// not ours: reading them for a marker was an out-of-bounds read, found by AddressSanitizer).
std::mutex g_ours_mutex;
std::unordered_set<void*>& ours() {
  static auto* set = new std::unordered_set<void*>();  // never destroyed: tensors may die after main
  return *set;
}

/// Back to malloc, no longer ours.
void release(void* base) {
  {
    std::lock_guard<std::mutex> lock(g_ours_mutex);
    ours().erase(static_cast<char*>(base) + kHeader);
  }
  std::free(base);
}

constexpr std::uint64_t kSweepEvery = 4096;  // allocations between idle sweeps

}  // namespace

CachingCpuAllocator::CachingCpuAllocator(std::size_t limit_bytes, std::uint64_t idle_allocations)
    : idle_allocations_(idle_allocations) {
  stats_.limit_bytes = limit_bytes;
}

CachingCpuAllocator::~CachingCpuAllocator() { empty(); }

std::size_t CachingCpuAllocator::size_class(std::size_t n) {
  if (n < kMinCached) return 0;
  const int top = 63 - __builtin_clzll(static_cast<unsigned long long>(n));
  const std::size_t step = std::size_t{1} << (top - 3);
  return (n + step - 1) & ~(step - 1);
}

c10::DataPtr CachingCpuAllocator::allocate(std::size_t n) {
  void* data = n == 0 ? nullptr : take(n);
  return {data, data, &delete_block, c10::Device(c10::DeviceType::CPU)};
}

c10::DeleterFnPtr CachingCpuAllocator::raw_deleter() const { return &delete_block; }

void CachingCpuAllocator::copy_data(void* dest, const void* src, std::size_t count) const {
  default_copy_data(dest, src, count);
}

CpuCacheStats CachingCpuAllocator::stats() {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void CachingCpuAllocator::empty() {
  std::vector<void*> drop;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [cls, blocks] : free_)
      for (const Block& b : blocks) drop.push_back(b.base);
    free_.clear();
    stats_.released += drop.size();
    stats_.cached_bytes = 0;
  }
  for (void* base : drop) release(base);
}

void CachingCpuAllocator::delete_block(void* data) {
  if (!data) return;
  bool mine = false;
  {
    std::lock_guard<std::mutex> lock(g_ours_mutex);
    mine = ours().count(data) > 0;
  }
  if (!mine) {
    std::free(data);
    return;
  }
  BlockHeader* h = header_of(data);
  if (h->cls == 0) release(h);
  else h->owner->give_back(h, h->cls);  // stays ours while cached
}

void* CachingCpuAllocator::take(std::size_t n) {
  const std::size_t cls = size_class(n);
  if (cls == 0) return fresh(n, 0);
  std::vector<void*> idle;
  void* reuse = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.allocations;
    // The same class, or failing that a cached block at most 1/4 larger (sizes that vary from
    // batch to batch, such as the text tower's longest caption, then share blocks).
    auto it = free_.lower_bound(cls);
    if (it != free_.end() && it->first <= cls + cls / 4) {
      reuse = it->second.back().base;  // the most recently freed: likeliest still in CPU caches
      it->second.pop_back();
      stats_.cached_bytes -= it->first;
      ++stats_.hits;
      if (it->second.empty()) free_.erase(it);
    }
    if (stats_.allocations % kSweepEvery == 0) collect_idle(idle);
  }
  for (void* base : idle) release(base);
  if (reuse) return static_cast<char*>(reuse) + kHeader;
  return fresh(n, cls);
}

void CachingCpuAllocator::collect_idle(std::vector<void*>& out) {
  if (stats_.allocations < idle_allocations_) return;
  const std::uint64_t cutoff = stats_.allocations - idle_allocations_;
  for (auto it = free_.begin(); it != free_.end();) {
    auto& blocks = it->second;
    std::size_t k = 0;
    while (k < blocks.size() && blocks[k].freed_at < cutoff) out.push_back(blocks[k++].base);
    stats_.cached_bytes -= k * it->first;
    stats_.released += k;
    blocks.erase(blocks.begin(), blocks.begin() + static_cast<std::ptrdiff_t>(k));
    it = blocks.empty() ? free_.erase(it) : std::next(it);
  }
}

void* CachingCpuAllocator::fresh(std::size_t n, std::size_t cls) {
  const std::size_t bytes = (cls ? cls : n) + kHeader;
  void* base = nullptr;
  if (posix_memalign(&base, kHeader, bytes) != 0) {
    empty();  // the memory held in the cache may be what is missing
    if (posix_memalign(&base, kHeader, bytes) != 0) base = nullptr;
  }
  TORCH_CHECK(base != nullptr, "CPU allocator: out of memory allocating ", n, " bytes");
  auto* h = static_cast<BlockHeader*>(base);
  h->owner = this;
  h->cls = cls;
  try {
    std::lock_guard<std::mutex> lock(g_ours_mutex);
    ours().insert(h + 1);
  } catch (const std::bad_alloc&) {
    std::free(base);
    throw;
  }
  return h + 1;
}

void CachingCpuAllocator::give_back(void* base, std::size_t cls) noexcept {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stats_.cached_bytes + cls <= stats_.limit_bytes) {
      try {
        free_[cls].push_back({base, stats_.allocations});
        stats_.cached_bytes += cls;
        return;
      } catch (const std::bad_alloc&) {  // a deleter must not throw: free the block instead
      }
    }
    ++stats_.released;
  }
  release(base);
}

namespace {

CachingCpuAllocator* g_installed = nullptr;  // never destroyed: static tensors may die after main

/// The container's memory limit (cgroup v2 memory.max, or v1 memory.limit_in_bytes); 0 if none.
std::size_t cgroup_memory_limit() {
  for (const char* path : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    if (FILE* f = std::fopen(path, "r")) {
      unsigned long long v = 0;
      const bool number = std::fscanf(f, "%llu", &v) == 1;  // "max" (no limit) does not parse
      std::fclose(f);
      if (number && v > 0 && v < (1ull << 60)) return static_cast<std::size_t>(v);
      return 0;
    }
  }
  return 0;
}

std::size_t parse_megabytes(const char* name, const char* value) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long mb = std::strtoull(value, &end, 10);
  if (errno != 0 || end == value || *end != '\0' || value[0] == '-' || mb == 0 || mb > (1ull << 30))
    throw std::invalid_argument(std::string(name) + "='" + value + "': expected a positive whole number of megabytes");
  return static_cast<std::size_t>(mb) << 20;
}

}  // namespace

// fork() from a threaded process: the lock is held across it, so the child's cache is consistent.
struct CpuAllocatorForkHandlers {
  static void lock() {
    g_installed->mutex_.lock();
    g_ours_mutex.lock();
  }
  static void unlock() {
    g_ours_mutex.unlock();
    g_installed->mutex_.unlock();
  }
};

CpuCacheConfig CpuCacheConfig::from_environment() {
  CpuCacheConfig c;
  if (const char* on = std::getenv("TORCHCLIP_CPU_CACHE")) {
    const std::string v = on;
    if (v != "0" && v != "1")
      throw std::invalid_argument("TORCHCLIP_CPU_CACHE='" + v + "': expected 1 (cache tensor memory, the default) or 0 (off)");
    c.enabled = v == "1";
  }
  if (const char* mb = std::getenv("TORCHCLIP_CPU_CACHE_MB")) {
    c.limit_bytes = parse_megabytes("TORCHCLIP_CPU_CACHE_MB", mb);
  } else {
    c.limit_bytes = memory_bytes() / 4;
  }
  return c;
}

std::size_t memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  std::size_t memory = pages > 0 && page > 0 ? static_cast<std::size_t>(pages) * static_cast<std::size_t>(page)
                                             : std::size_t{4} << 30;
  if (const std::size_t container = cgroup_memory_limit(); container > 0 && container < memory) memory = container;
  return memory;
}

bool install_cpu_caching_allocator() {
  static bool done = false;
  if (done) return g_installed != nullptr;
  const CpuCacheConfig config = CpuCacheConfig::from_environment();
  done = true;
  if (!config.enabled) return false;
  g_installed = new CachingCpuAllocator(config.limit_bytes);
  ::pthread_atfork(&CpuAllocatorForkHandlers::lock, &CpuAllocatorForkHandlers::unlock, &CpuAllocatorForkHandlers::unlock);
  c10::SetCPUAllocator(g_installed, /*priority=*/1);
  return true;
}

CachingCpuAllocator* installed_cpu_caching_allocator() { return g_installed; }

}  // namespace torchclip
