// A caching CPU allocator for LibTorch tensors.
//
// LibTorch's default CPU allocator calls posix_memalign/free for every tensor. A training step
// allocates and frees the same multi-MB activation and gradient buffers every step, and glibc
// serves blocks of that size with mmap (or trims the heap top after they are freed), so every
// step page-faults the same memory in again: 10-15% of a tiny-CLIP step on 2 cores. Raising
// glibc's mmap/trim thresholds process-wide removes that too, but changes every allocation in the
// process and made two concurrent jobs on shared cores much slower (see README, "Speed").
//
// This allocator keeps freed tensor blocks of 64 KiB and more in per-size free lists (sizes
// rounded up to 1/8 of their power of two) and hands them out again, as PyTorch's CUDA caching
// allocator does for device memory. Smaller blocks go straight to malloc, which serves them from
// its arenas anyway. The cache is bounded: blocks idle in the cache through many allocations are
// released (so a phase that stops using a size gives it back), and it never holds more than a
// byte limit.
#pragma once

#include <c10/core/Allocator.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

namespace torchclip {

struct CpuCacheStats {
  std::uint64_t allocations = 0;  // calls for >= 64 KiB
  std::uint64_t hits = 0;         // served from the cache
  std::uint64_t released = 0;     // cached blocks given back to malloc (idle, over the limit, emptied)
  std::size_t cached_bytes = 0;   // held in the cache now
  std::size_t limit_bytes = 0;
};

class CachingCpuAllocator final : public c10::Allocator {
 public:
  /// Blocks of at least this many bytes are cached; smaller ones go to malloc.
  static constexpr std::size_t kMinCached = std::size_t{64} << 10;
  /// A tiny-CLIP training step makes about 200 cached-size allocations, ViT-B-32 about 700.
  static constexpr std::uint64_t kDefaultIdleAllocations = std::uint64_t{1} << 16;

  /// Holds at most `limit_bytes`; a cached block that no allocation took during
  /// `idle_allocations` cached-size allocations is released.
  explicit CachingCpuAllocator(std::size_t limit_bytes, std::uint64_t idle_allocations = kDefaultIdleAllocations);
  /// Frees the cached blocks. Blocks still in use must not outlive the allocator.
  ~CachingCpuAllocator() override;

  c10::DataPtr allocate(std::size_t n) override;
  c10::DeleterFnPtr raw_deleter() const override;
  void copy_data(void* dest, const void* src, std::size_t count) const override;

  CpuCacheStats stats();
  /// Gives every cached block back to malloc (blocks in use are untouched).
  void empty();

  /// The size class of an n-byte request: n rounded up to a multiple of 1/8 of its power of two
  /// (at most 12.5% more); 0 below kMinCached.
  static std::size_t size_class(std::size_t n);

 private:
  struct Block {
    void* base;
    std::uint64_t freed_at;  // stats_.allocations when it entered the cache
  };
  static void delete_block(void* data);
  void* take(std::size_t n);
  void give_back(void* base, std::size_t cls) noexcept;
  void* fresh(std::size_t n, std::size_t cls);
  void collect_idle(std::vector<void*>& out);

  const std::uint64_t idle_allocations_;
  std::mutex mutex_;
  std::map<std::size_t, std::vector<Block>> free_;  // size class -> blocks, oldest first (never empty)
  CpuCacheStats stats_;

  friend struct CpuAllocatorForkHandlers;
};

/// This machine's memory in bytes: physical memory, or the container's limit (cgroup) when lower.
std::size_t memory_bytes();

/// TORCHCLIP_CPU_CACHE (1, the default, or 0) and TORCHCLIP_CPU_CACHE_MB (the limit; default a
/// quarter of physical memory, or of the container's cgroup limit when lower). Throws
/// std::invalid_argument naming a malformed variable.
struct CpuCacheConfig {
  bool enabled = true;
  std::size_t limit_bytes = 0;
  static CpuCacheConfig from_environment();
};

/// Installs a CachingCpuAllocator as LibTorch's CPU allocator (c10::SetCPUAllocator) as the
/// environment says (CpuCacheConfig). Call once, first in main, before any ATen op and before
/// threads start; later calls return the first result. Tensors allocated before keep their own
/// deleter, and raw buffers of the default allocator freed through this one afterwards (oneDNN's
/// glue does that) are recognised and passed to free(). Returns whether it is installed.
bool install_cpu_caching_allocator();

/// The installed allocator, or nullptr.
CachingCpuAllocator* installed_cpu_caching_allocator();

}  // namespace torchclip
