// The caching CPU allocator: size classes computed by hand, reuse, the byte limit, idle release,
// concurrent use, the environment, and LibTorch tensors (and fork) on the installed allocator.
#include "util/cpu_allocator.h"
#include "support.h"

#include <c10/core/CPUAllocator.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <thread>

namespace torchclip {
namespace {

constexpr std::size_t KiB = 1024, MiB = 1024 * 1024;

TEST(CachingCpuAllocator, SizeClassesRoundUpToAnEighthOfThePowerOfTwo) {
  EXPECT_EQ(CachingCpuAllocator::size_class(1000), 0u);  // below 64 KiB: not cached
  EXPECT_EQ(CachingCpuAllocator::size_class(64 * KiB - 1), 0u);
  EXPECT_EQ(CachingCpuAllocator::size_class(64 * KiB), 64 * KiB);
  EXPECT_EQ(CachingCpuAllocator::size_class(64 * KiB + 1), 72 * KiB);       // step 8 KiB
  EXPECT_EQ(CachingCpuAllocator::size_class(100000), 13 * 8 * KiB);         // 106496
  EXPECT_EQ(CachingCpuAllocator::size_class(921600), 15 * 64 * KiB);        // 900 KiB -> 960 KiB
  EXPECT_EQ(CachingCpuAllocator::size_class(3 * MiB + 1), 3 * MiB + 256 * KiB);
  EXPECT_EQ(CachingCpuAllocator::size_class(std::size_t{1} << 30), std::size_t{1} << 30);
}

TEST(CachingCpuAllocator, ReusesAFreedBlockOfTheSameClassAndKeepsAlignment) {
  CachingCpuAllocator alloc(64 * MiB);
  void* first = nullptr;
  {
    c10::DataPtr a = alloc.allocate(100000);
    first = a.get();
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(first) % 64, 0u);
    std::memset(first, 0x5a, 100000);
    EXPECT_EQ(alloc.stats().cached_bytes, 0u);
  }
  EXPECT_EQ(alloc.stats().cached_bytes, 106496u);
  c10::DataPtr b = alloc.allocate(106000);  // same class
  EXPECT_EQ(b.get(), first);
  EXPECT_EQ(b.get(), b.get_context());  // the raw API's requirement
  const CpuCacheStats s = alloc.stats();
  EXPECT_EQ(s.allocations, 2u);
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.cached_bytes, 0u);
  c10::DataPtr small = alloc.allocate(1000);  // malloc'd, not counted
  EXPECT_EQ(alloc.stats().allocations, 2u);
  c10::DataPtr none = alloc.allocate(0);
  EXPECT_EQ(none.get(), nullptr);
}

TEST(CachingCpuAllocator, TakesALargerBlockUpToAQuarterLargerOnly) {
  CachingCpuAllocator alloc(64 * MiB);
  void* one_mib = alloc.allocate(MiB).get();  // freed at once: cached as 1 MiB
  c10::DataPtr smaller = alloc.allocate(400 * KiB);  // class 400 KiB: 1 MiB is more than 1.25x
  EXPECT_NE(smaller.get(), one_mib);
  c10::DataPtr near = alloc.allocate(900 * KiB);  // class 960 KiB: 1 MiB is within 1.25x
  EXPECT_EQ(near.get(), one_mib);
  EXPECT_EQ(alloc.stats().hits, 1u);
  near.clear();  // goes back to its own (1 MiB) class
  EXPECT_EQ(alloc.stats().cached_bytes, MiB);
  EXPECT_EQ(alloc.allocate(MiB).get(), one_mib);
}

TEST(CachingCpuAllocator, NeverHoldsMoreThanItsLimit) {
  CachingCpuAllocator alloc(MiB);
  {
    std::vector<c10::DataPtr> blocks;
    for (int i = 0; i < 3; ++i) blocks.push_back(alloc.allocate(512 * KiB));
  }
  CpuCacheStats s = alloc.stats();
  EXPECT_EQ(s.cached_bytes, MiB);
  EXPECT_EQ(s.released, 1u);
  alloc.empty();
  s = alloc.stats();
  EXPECT_EQ(s.cached_bytes, 0u);
  EXPECT_EQ(s.released, 3u);
}

TEST(CachingCpuAllocator, ReleasesBlocksLeftIdleThroughManyAllocations) {
  CachingCpuAllocator alloc(64 * MiB, /*idle_allocations=*/100);
  alloc.allocate(MiB);  // cached, then never asked for again
  for (int i = 0; i < 5000; ++i) alloc.allocate(64 * KiB);  // each reuses the same cached block
  const CpuCacheStats s = alloc.stats();
  EXPECT_EQ(s.allocations, 5001u);
  EXPECT_EQ(s.hits, 4999u);
  EXPECT_EQ(s.released, 1u);  // the 1 MiB block, at the sweep after 4096 allocations
  EXPECT_EQ(s.cached_bytes, 64 * KiB);
}

TEST(CachingCpuAllocator, ThreadsAllocatingAtOnceKeepTheirOwnData) {
  CachingCpuAllocator alloc(512 * MiB);
  std::vector<std::thread> threads;
  std::vector<int> corrupt(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        const std::size_t n = (64 + 37 * ((i * 7 + t) % 50)) * KiB;
        c10::DataPtr p = alloc.allocate(n);
        auto* bytes = static_cast<unsigned char*>(p.get());
        std::memset(bytes, t + 1, n);
        std::this_thread::yield();
        if (bytes[0] != t + 1 || bytes[n / 2] != t + 1 || bytes[n - 1] != t + 1) ++corrupt[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(corrupt[t], 0) << "thread " << t;
  const CpuCacheStats s = alloc.stats();
  EXPECT_EQ(s.allocations, 8000u);
  EXPECT_GT(s.hits, 7000u);
}

/// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) ::setenv(name, value->c_str(), 1);
    else ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(CpuCacheConfig, ReadsTheEnvironmentAndNamesABadVariable) {
  {
    ScopedEnv on("TORCHCLIP_CPU_CACHE", std::nullopt), mb("TORCHCLIP_CPU_CACHE_MB", std::nullopt);
    const CpuCacheConfig c = CpuCacheConfig::from_environment();
    EXPECT_TRUE(c.enabled);
    const std::size_t physical = static_cast<std::size_t>(::sysconf(_SC_PHYS_PAGES)) * ::sysconf(_SC_PAGESIZE);
    EXPECT_EQ(c.limit_bytes, physical / 4);
  }
  {
    ScopedEnv on("TORCHCLIP_CPU_CACHE", "0"), mb("TORCHCLIP_CPU_CACHE_MB", "512");
    const CpuCacheConfig c = CpuCacheConfig::from_environment();
    EXPECT_FALSE(c.enabled);
    EXPECT_EQ(c.limit_bytes, 512 * MiB);
  }
  for (const char* bad : {"yes", "", "2"}) {
    ScopedEnv on("TORCHCLIP_CPU_CACHE", bad);
    EXPECT_THROW(
        try { CpuCacheConfig::from_environment(); } catch (const std::invalid_argument& e) {
          EXPECT_NE(std::string(e.what()).find("TORCHCLIP_CPU_CACHE='"), std::string::npos) << e.what();
          EXPECT_NE(std::string(e.what()).find("or 0"), std::string::npos) << e.what();
          throw;
        },
        std::invalid_argument);
  }
  for (const char* bad : {"abc", "-5", "0", "12MB", "99999999999999999999"}) {
    ScopedEnv mb("TORCHCLIP_CPU_CACHE_MB", bad);
    EXPECT_THROW(
        try { CpuCacheConfig::from_environment(); } catch (const std::invalid_argument& e) {
          EXPECT_NE(std::string(e.what()).find("TORCHCLIP_CPU_CACHE_MB"), std::string::npos) << e.what();
          throw;
        },
        std::invalid_argument);
  }
}

TEST(CachingCpuAllocator, InstalledItServesLibTorchTensorsAndSurvivesFork) {
  ScopedEnv on("TORCHCLIP_CPU_CACHE", std::nullopt), mb("TORCHCLIP_CPU_CACHE_MB", std::nullopt);
  // A raw buffer of LibTorch's default allocator, freed after installation through the new one
  // (oneDNN's glue does this): recognised as foreign and given to free().
  void* foreign = c10::GetDefaultCPUAllocator()->raw_allocate(MiB);
  ASSERT_TRUE(install_cpu_caching_allocator());
  CachingCpuAllocator* alloc = installed_cpu_caching_allocator();
  ASSERT_NE(alloc, nullptr);
  EXPECT_EQ(c10::GetCPUAllocator(), alloc);
  alloc->raw_deallocate(foreign);
  const CpuCacheStats before = alloc->stats();
  EXPECT_EQ(before.cached_bytes, 0u);  // the foreign buffer was not cached
  constexpr int64_t n = 1 << 20;  // 8 MB of int64: cached
  for (int i = 0; i < 3; ++i) {
    at::Tensor x = at::arange(n, at::kLong);
    EXPECT_EQ(x.sum().item<int64_t>(), n * (n - 1) / 2);
    at::Tensor y = at::randn({512, 512});
    EXPECT_TRUE(test::all_close(at::mm(y, at::eye(512)), y, 1e-6, 0));
  }
  const CpuCacheStats after = alloc->stats();
  EXPECT_GE(after.allocations - before.allocations, 6u);
  EXPECT_GE(after.hits - before.hits, 4u);  // the 2nd and 3rd rounds reuse the 1st round's blocks
  void* raw = alloc->raw_allocate(MiB);
  std::memset(raw, 1, MiB);
  alloc->raw_deallocate(raw);

  // A thread keeps allocating while the main thread forks: the child must get a usable allocator
  // (without the fork handlers, a fork while that thread holds the lock deadlocks the child).
  std::atomic<bool> stop{false};
  std::thread busy([&] {
    while (!stop) alloc->allocate(MiB + (std::rand() % 4) * 256 * KiB);
  });
  for (int i = 0; i < 50; ++i) {
    const pid_t pid = ::fork();
    if (pid < 0) {
      ADD_FAILURE() << "fork failed";
      break;
    }
    if (pid == 0) {  // no ATen ops here: libgomp's thread pool does not survive fork
      ::alarm(20);     // a deadlocked allocator fails the test instead of hanging it
      void* a = nullptr;
      {
        c10::DataPtr p = c10::GetCPUAllocator()->allocate(8 * MiB);
        std::memset(p.get(), 7, 8 * MiB);
        a = p.get();
      }
      c10::DataPtr again = c10::GetCPUAllocator()->allocate(8 * MiB);
      ::_exit(again.get() == a ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  }
  stop = true;
  busy.join();
}

}  // namespace
}  // namespace torchclip
