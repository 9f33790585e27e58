// c10d process groups (see dist.h). The Gloo headers come from Debian's libgloo-dev: torch's
// ProcessGroupGloo holds gloo objects only through pointers, so the declarations are all it needs.
#include "distributed/dist.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <netdb.h>
#include <sys/socket.h>
#ifdef TORCHCLIP_HAVE_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include <zlib.h>

#include <algorithm>
#include <map>
#include <chrono>
#include <mutex>
#include <optional>
#include <cstdlib>
#include <stdexcept>

namespace torchclip::dist {

namespace {

/// An exception's message without the C++ stack trace c10::Error carries (dozens of frames that
/// say nothing to someone whose MASTER_ADDR is wrong).
std::string without_backtrace(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) return c10_error->what_without_backtrace();
  return e.what();
}

std::optional<int64_t> env_int(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v, &end, 10);
  if (*end != '\0' || errno) throw std::invalid_argument(fmt::format("environment variable {}='{}' is not an integer", name, v));
  return x;
}

std::chrono::milliseconds to_ms(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

}  // namespace

Env Env::from_environment() {
  Env e;
  const auto rank = env_int("RANK"), world = env_int("WORLD_SIZE");
  if (!rank && !world) return e;
  if (!rank || !world)
    throw std::invalid_argument(fmt::format("{} is set but {} is not; a launcher (torchrun, srun) sets both",
                                            rank ? "RANK" : "WORLD_SIZE", rank ? "WORLD_SIZE" : "RANK"));
  if (*world < 1) throw std::invalid_argument(fmt::format("WORLD_SIZE={} must be >= 1", *world));
  if (*rank < 0 || *rank >= *world)
    throw std::invalid_argument(fmt::format("RANK={} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={})", *rank, *world));
  e.rank = *rank;
  e.world_size = *world;
  e.local_rank = env_int("LOCAL_RANK").value_or(0);
  e.local_world_size = env_int("LOCAL_WORLD_SIZE").value_or(1);
  if (e.local_rank < 0 || e.local_rank >= std::max<int64_t>(e.local_world_size, 1))
    throw std::invalid_argument(
        fmt::format("LOCAL_RANK={} is outside 0..LOCAL_WORLD_SIZE-1 (LOCAL_WORLD_SIZE={})", e.local_rank, e.local_world_size));
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) e.master_addr = a;
  else if (e.world_size > 1) throw std::invalid_argument("MASTER_ADDR is not set (the host of rank 0)");
  if (auto p = env_int("MASTER_PORT")) e.master_port = *p;
  else if (e.world_size > 1) throw std::invalid_argument("MASTER_PORT is not set (a free TCP port on MASTER_ADDR)");
  if (e.master_port < 1 || e.master_port > 65535)
    throw std::invalid_argument(fmt::format("MASTER_PORT={} is outside 1..65535", e.master_port));
  if (const char* a = std::getenv("TORCHELASTIC_USE_AGENT_STORE")) e.agent_store = std::string(a) == "True";
  e.restart_count = env_int("TORCHELASTIC_RESTART_COUNT").value_or(0);
  return e;
}

std::vector<std::string> available_backends() {
#ifdef TORCHCLIP_HAVE_NCCL
  return {"gloo", "nccl"};
#else
  return {"gloo"};
#endif
}

struct Group::Impl {
  Env env;
  std::string backend;
  double timeout_seconds = 0;
  c10::intrusive_ptr<c10d::Store> store;  // the prefixed store the group uses
  c10::intrusive_ptr<c10d::Backend> pg;
  int64_t gathers = 0;  // all_gather_strings calls so far: every rank makes them in the same order
  std::string label;    // a subgroup's " in <name>" for messages; empty for the whole job
  int64_t group_rank = 0, group_size = 1;  // this process's place in the group (env: in the job)
  std::map<std::string, int64_t> groups_named;  // new_group calls so far, by name

  /// Creates the Gloo or NCCL backend for `rank` of `size` on `store`.
  void create_backend(int64_t rank, int64_t size) {
    const auto timeout = to_ms(timeout_seconds);
    try {
      if (backend == "gloo") {
        auto go = c10d::ProcessGroupGloo::Options::create(timeout);
        if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
          go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
        } else if (env.master_addr == "127.0.0.1" || env.master_addr == "localhost") {
          go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
        } else {
          go->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
        }
        pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, static_cast<int>(rank), static_cast<int>(size), go);
      } else {
#ifdef TORCHCLIP_HAVE_NCCL
        auto no = c10d::ProcessGroupNCCL::Options::create();
        no->timeout = timeout;
        pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, static_cast<int>(rank), static_cast<int>(size), no);
#endif
      }
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("rank {}/{}{}: creating the {} process group failed within {} s: {}", env.rank,
                                           env.world_size, label, backend, timeout_seconds, without_backtrace(e)));
    }
  }

  /// Waits for `work`, turning backend errors into one message with context.
  void wait(const c10::intrusive_ptr<c10d::Work>& work, const char* what) const {
    try {
      work->wait();
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("rank {}/{}{}: {} failed ({}; another rank has probably exited or hung, "
                                           "timeout {} s): {}",
                                           env.rank, env.world_size, label, what, backend, timeout_seconds, without_backtrace(e)));
    }
  }
  template <typename F>
  auto guarded(const char* what, F&& f) const {
    try {
      return f();
    } catch (const std::runtime_error&) {
      throw;
    } catch (const std::exception& e) {
      throw std::runtime_error(
          fmt::format("rank {}/{}{}: {} failed ({}): {}", env.rank, env.world_size, label, what, backend, without_backtrace(e)));
    }
  }
};

Group::Group(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Group::~Group() = default;

std::shared_ptr<Group> Group::init(const Env& env, const GroupOptions& o) {
  auto impl = std::make_unique<Impl>();
  impl->env = env;
  impl->timeout_seconds = o.timeout_seconds();
  std::string backend = o.backend();
  if (backend == "auto") backend = o.cuda() ? "nccl" : "gloo";
  const auto valid = available_backends();
  if (std::find(valid.begin(), valid.end(), backend) == valid.end())
    throw std::invalid_argument(fmt::format("dist.backend: '{}' is not available in this build; valid: auto, {}", backend,
                                            fmt::join(valid, ", ")));
  if (backend == "gloo" && o.cuda())
    throw std::invalid_argument("dist.backend: gloo reduces CPU tensors here; use nccl (or auto) for CUDA training");
  impl->backend = backend;
  const auto timeout = to_ms(o.timeout_seconds());
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(env.master_port);
  so.isServer = env.rank == 0 && !env.agent_store;
  so.numWorkers = static_cast<size_t>(env.world_size);
  so.waitWorkers = true;
  so.timeout = timeout;
  // An address that does not resolve would fail inside c10d with a long C++ stack trace.
  if (!env.agent_store) {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    const int rc = ::getaddrinfo(env.master_addr.c_str(), nullptr, &hints, &found);
    if (found) ::freeaddrinfo(found);
    if (rc != 0)
      throw std::invalid_argument(fmt::format("MASTER_ADDR='{}' does not resolve to an address ({}); set it to the host "
                                              "name or IP address of rank 0",
                                              env.master_addr, ::gai_strerror(rc)));
  }
  try {
    impl->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format(
        "rank {}/{}: rendezvous at {}:{} failed within {} s ({}). Check MASTER_ADDR/MASTER_PORT: rank 0 must be able to "
        "listen there (a port already in use fails at once) and every rank must reach it; a rank that never arrives "
        "ends the wait at the timeout",
        env.rank, env.world_size, env.master_addr, env.master_port, o.timeout_seconds(), without_backtrace(e)));
  }
  const std::string prefix =
      (env.agent_store ? fmt::format("/worker/attempt_{}/", env.restart_count) : std::string()) + "torchclip/" + backend;
  impl->store = c10::make_intrusive<c10d::PrefixStore>(prefix, impl->store);
  impl->group_rank = env.rank;
  impl->group_size = env.world_size;
  impl->create_backend(env.rank, env.world_size);
  return std::shared_ptr<Group>(new Group(std::move(impl)));
}

int64_t Group::rank() const { return impl_->group_rank; }
int64_t Group::world_size() const { return impl_->group_size; }
const std::string& Group::backend() const { return impl_->backend; }

std::shared_ptr<Group> Group::new_group(const std::vector<int64_t>& ranks, const std::string& name) {
  std::vector<int64_t> sorted = ranks;
  std::sort(sorted.begin(), sorted.end());
  TORCH_CHECK(!sorted.empty() && sorted.front() >= 0 && sorted.back() < world_size() &&
                  std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end(),
              "new_group '", name, "': ranks must be distinct and in 0..", world_size() - 1);
  const auto it = std::find(ranks.begin(), ranks.end(), rank());
  TORCH_CHECK(it != ranks.end(), "new_group: rank ", rank(), " is not in group '", name, "'");
  const int64_t count = impl_->groups_named[name]++;  // the same on every member: they make the same calls
  auto impl = std::make_unique<Impl>();
  impl->env = impl_->env;  // messages keep the job's rank; the subgroup's own is its index
  impl->backend = impl_->backend;
  impl->timeout_seconds = impl_->timeout_seconds;
  impl->label = " in " + name;
  impl->store = c10::make_intrusive<c10d::PrefixStore>(fmt::format("group/{}/{}", name, count), impl_->store);
  impl->group_rank = it - ranks.begin();
  impl->group_size = static_cast<int64_t>(ranks.size());
  impl->create_backend(impl->group_rank, impl->group_size);
  return std::shared_ptr<Group>(new Group(std::move(impl)));
}

void Group::all_reduce_sum(std::vector<at::Tensor>& tensors) {
  // One collective per tensor, all in flight before the first wait.
  std::vector<Pending> pending;
  for (const auto& t : tensors) pending.push_back(all_reduce_sum_async(t));
  for (auto& p : pending) p.wait();
}

namespace {

/// Starts `issue(tensors)` on a one-tensor list; errors then and at the wait name `what`.
template <typename Issue>
Group::Pending start_one(Group::Impl* impl, const char* what, const at::Tensor& tensor, Issue issue) {
  std::vector<at::Tensor> one{tensor};
  auto work = impl->guarded(what, [&] { return issue(one); });
  return {[impl, work, what] { impl->wait(work, what); }, [work] { return work->isCompleted(); }};
}

}  // namespace

Group::Pending Group::all_reduce_sum_async(const at::Tensor& tensor) {
  return start_one(impl_.get(), "all-reduce", tensor, [&](std::vector<at::Tensor>& t) { return impl_->pg->allreduce(t); });
}

Group::Pending Group::reduce_sum_async(const at::Tensor& tensor, int64_t root) {
  c10d::ReduceOptions ro;
  ro.rootRank = root;
  return start_one(impl_.get(), "reduce", tensor, [&](std::vector<at::Tensor>& t) { return impl_->pg->reduce(t, ro); });
}

Group::Pending Group::broadcast_async(const at::Tensor& tensor, int64_t root) {
  c10d::BroadcastOptions bo;
  bo.rootRank = root;
  return start_one(impl_.get(), "broadcast", tensor, [&](std::vector<at::Tensor>& t) { return impl_->pg->broadcast(t, bo); });
}

Group::Pending Group::send_async(const at::Tensor& tensor, int64_t to) {
  return start_one(impl_.get(), "send", tensor, [&](std::vector<at::Tensor>& t) { return impl_->pg->send(t, static_cast<int>(to), 0); });
}

Group::Pending Group::recv_async(const at::Tensor& tensor, int64_t from) {
  return start_one(impl_.get(), "receive", tensor, [&](std::vector<at::Tensor>& t) { return impl_->pg->recv(t, static_cast<int>(from), 0); });
}

std::vector<at::Tensor> Group::all_gather(const at::Tensor& local) {
  auto in = local.contiguous();
  std::vector<std::vector<at::Tensor>> out(1);
  for (int64_t r = 0; r < world_size(); ++r) out[0].push_back(at::empty_like(in));
  std::vector<at::Tensor> inputs{in};
  auto work = impl_->guarded("all-gather", [&] { return impl_->pg->allgather(out, inputs); });
  impl_->wait(work, "all-gather");
  return out[0];
}

void Group::broadcast(std::vector<at::Tensor>& tensors, int64_t root) {
  c10d::BroadcastOptions bo;
  bo.rootRank = root;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  impl_->guarded("broadcast", [&] {
    for (auto& t : tensors) {
      std::vector<at::Tensor> one{t};
      works.push_back(impl_->pg->broadcast(one, bo));
    }
    return 0;
  });
  for (auto& w : works) impl_->wait(w, "broadcast");
}

std::vector<std::string> Group::all_gather_strings(const std::string& local) {
  // Through the store, not the backend: NCCL moves CUDA tensors only, and strings (loader
  // positions, checksums) are host data. Call k of every rank uses keys gather/k/RANK.
  const int64_t call = impl_->gathers++;
  auto key = [](int64_t k, int64_t r) { return fmt::format("gather/{}/{}", k, r); };
  // Every rank finished reading call k - 2 before it wrote call k - 1, which this rank has seen
  // all of: its own key of call k - 2 can go.
  if (call >= 2) impl_->store->deleteKey(key(call - 2, rank()));
  impl_->store->set(key(call, rank()), std::vector<uint8_t>(local.begin(), local.end()));
  std::vector<std::string> keys, out;
  for (int64_t r = 0; r < world_size(); ++r) keys.push_back(key(call, r));
  try {
    impl_->store->wait(keys, std::chrono::milliseconds(static_cast<int64_t>(impl_->timeout_seconds * 1000)));
    for (const auto& k : keys) {
      const auto v = impl_->store->get(k);
      out.emplace_back(v.begin(), v.end());
    }
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("rank {}/{}: gathering strings failed (another rank has probably exited or hung, "
                                         "timeout {} s): {}",
                                         rank(), world_size(), impl_->timeout_seconds, without_backtrace(e)));
  }
  return out;
}

std::string Group::broadcast_string(const std::string& value, int64_t root) {
  return all_gather_strings(rank() == root ? value : std::string())[root];
}

void Group::barrier() {
  auto work = impl_->guarded("barrier", [&] { return impl_->pg->barrier(); });
  impl_->wait(work, "barrier");
}

void Group::run_on_rank0(const std::string& what, const std::function<void()>& fn) {
  const std::string key = "rank0/" + what;
  auto to_bytes = [](const std::string& v) { return std::vector<uint8_t>(v.begin(), v.end()); };
  if (rank() == 0) {
    try {
      fn();
    } catch (const std::exception& e) {
      impl_->store->set(key, to_bytes(std::string("error: ") + without_backtrace(e)));
      throw;
    }
    impl_->store->set(key, to_bytes("ok"));
    return;
  }
  std::string status;
  try {
    impl_->store->wait({key}, std::chrono::hours(24 * 7));
    const auto v = impl_->store->get(key);
    status.assign(v.begin(), v.end());
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("rank {}/{}: lost rank 0 while it ran {}: {}", rank(), world_size(), what, without_backtrace(e)));
  }
  if (status != "ok")
    throw std::runtime_error(fmt::format("rank {}/{}: rank 0 failed in {}: {}", rank(), world_size(), what, status));
}

// ---- gradients -----------------------------------------------------------------------------

/// Per-step bookkeeping of the buckets, shared with the gradient hooks (which may run on
/// autograd's device threads, hence the lock).
struct GradientAverager::State {
  std::mutex mutex;
  bool armed = false;
  std::vector<size_t> bucket_of;                 // [params] -> bucket
  std::vector<size_t> ready;                     // [buckets] gradients accumulated this backward
  std::vector<at::Tensor> flat;                  // [buckets] the flattened gradients in flight
  std::vector<int64_t> flat_bytes;               // [buckets] their sizes
  std::vector<Group::Pending> pending;           // [buckets] valid below `next`
  size_t next = 0;                               // buckets start in index order on every rank
};

namespace {

/// Calls the averager when AccumulateGrad has written a parameter's gradient for this backward.
struct ReadyHook : public torch::autograd::PostAccumulateGradHook {
  ReadyHook(std::function<void()> fn) : fn(std::move(fn)) {}
  void operator()(const torch::autograd::Variable&) override { fn(); }
  std::function<void()> fn;
};

}  // namespace

std::vector<int64_t> partition_parameters(const std::vector<at::Tensor>& params, int64_t world) {
  TORCH_CHECK(world >= 1, "partition_parameters: world must be >= 1");
  int64_t total = 0;
  for (const auto& p : params) total += static_cast<int64_t>(p.nbytes());
  // Walk backward order; rank r takes parameters until the running total passes (r + 1) / world
  // of the whole, cutting before a tensor when that lands nearer the mark than after it.
  std::vector<int64_t> owner(params.size(), 0);
  int64_t rank = 0, so_far = 0;
  for (size_t k = params.size(); k-- > 0;) {
    const int64_t b = static_cast<int64_t>(params[k].nbytes());
    while (rank + 1 < world) {
      const double mark = static_cast<double>(total) * static_cast<double>(rank + 1) / static_cast<double>(world);
      if (so_far + b / 2.0 <= mark) break;  // most of this tensor lies before the mark: it stays
      ++rank;
    }
    owner[k] = rank;
    so_far += b;
  }
  return owner;
}

GradientAverager::GradientAverager(std::shared_ptr<Group> group, std::vector<at::Tensor> params, AveragerOptions options)
    : group_(std::move(group)), params_(std::move(params)), options_(std::move(options)), state_(std::make_unique<State>()) {
  const int64_t bucket_bytes = options_.bucket_bytes();
  TORCH_CHECK(bucket_bytes > 0, "GradientAverager: bucket_bytes must be positive");
  const auto& owners = options_.owners();
  TORCH_CHECK(owners.empty() || owners.size() == params_.size(), "GradientAverager: ", owners.size(),
              " owners for ", params_.size(), " parameters");
  TORCH_CHECK(!options_.reduce_to_owner() || !owners.empty(), "GradientAverager: reduce_to_owner needs owners");
  std::vector<size_t> bucket;
  int64_t bytes = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const auto& p = params_[k];
    const int64_t b = p.numel() * static_cast<int64_t>(p.element_size());
    // A bucket holds one dtype, device and owner, so it flattens into one tensor.
    if (!bucket.empty() && (bytes + b > bucket_bytes || p.scalar_type() != params_[bucket[0]].scalar_type() ||
                            p.device() != params_[bucket[0]].device() ||
                            (!owners.empty() && owners[k] != owners[bucket[0]]))) {
      buckets_.push_back(std::move(bucket));
      bucket.clear();
      bytes = 0;
    }
    bucket.push_back(k);
    bytes += b;
  }
  if (!bucket.empty()) buckets_.push_back(std::move(bucket));
  State& s = *state_;
  s.bucket_of.assign(params_.size(), 0);
  for (size_t b = 0; b < buckets_.size(); ++b)
    for (size_t k : buckets_[b]) s.bucket_of[k] = b;
  s.ready.assign(buckets_.size(), 0);
  s.flat.assign(buckets_.size(), at::Tensor());
  s.flat_bytes.assign(buckets_.size(), 0);
  s.pending.resize(buckets_.size());
  for (size_t k = 0; k < params_.size(); ++k)
    if (params_[k].requires_grad())
      torch::autograd::impl::set_post_acc_grad_hooks(params_[k], std::make_unique<ReadyHook>([this, k] { on_gradient(k); }));
}

GradientAverager::~GradientAverager() {
  for (auto& p : params_)
    if (p.requires_grad()) torch::autograd::impl::set_post_acc_grad_hooks(p, nullptr);
}

void GradientAverager::arm() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->armed = true;
}

void GradientAverager::mark_ready(const at::Tensor& param) {
  for (size_t k = 0; k < params_.size(); ++k)
    if (params_[k].unsafeGetTensorImpl() == param.unsafeGetTensorImpl()) on_gradient(k);
}

void GradientAverager::on_gradient(size_t k) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  State& s = *state_;
  if (!s.armed) return;  // an earlier micro-batch's backward: gradients still accumulate
  ++s.ready[s.bucket_of[k]];
  // Collectives must be issued in the same order on every rank, so a ready bucket also waits for
  // the buckets before it (DDP's rule); buckets run in reverse parameter order, which is about
  // the order backward produces gradients, so the wait is short.
  while (s.next < buckets_.size() && s.ready[s.next] == buckets_[s.next].size()) start(s.next++);
}

bool GradientAverager::owns(size_t k) const {
  return options_.owners().empty() || options_.owners().at(k) == group_->rank();
}

int64_t GradientAverager::owner_of_bucket(size_t b) const { return options_.owners().at(buckets_[b][0]); }

void GradientAverager::start(size_t b) {
  State& s = *state_;
  std::vector<at::Tensor> parts;
  for (size_t k : buckets_[b]) {
    auto& p = params_[k];
    if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
    parts.push_back(p.grad().reshape({-1}));
  }
  s.flat[b] = at::cat(parts);  // [bucket numel]
  s.flat_bytes[b] = static_cast<int64_t>(s.flat[b].nbytes());
  if (!options_.reduce_to_owner()) {
    s.pending[b] = group_->all_reduce_sum_async(s.flat[b]);
    return;
  }
  const int64_t owner = owner_of_bucket(b);
  s.pending[b] = group_->reduce_sum_async(s.flat[b], owner);
  if (owner != group_->rank()) {
    // Not ours: the reduce's work keeps its input alive until it completes, so neither the
    // gradients nor the packed copy stay here (stage 2 never holds more than its share).
    for (size_t k : buckets_[b]) params_[k].mutable_grad() = at::Tensor();
    s.flat[b] = at::Tensor();
  }
}

void GradientAverager::broadcast_from_owners() {
  TORCH_CHECK(!options_.owners().empty(), "GradientAverager::broadcast_from_owners: no owners");
  at::NoGradGuard no_grad;
  const int64_t me = group_->rank();
  std::vector<at::Tensor> flat(buckets_.size());
  std::vector<Group::Pending> pending(buckets_.size());
  auto issue = [&](size_t b) {
    const int64_t owner = owner_of_bucket(b);
    if (owner == me) {
      std::vector<at::Tensor> parts;
      for (size_t k : buckets_[b]) parts.push_back(params_[k].detach().reshape({-1}));
      flat[b] = at::cat(parts);  // [bucket numel]
    } else {
      int64_t n = 0;
      for (size_t k : buckets_[b]) n += params_[k].numel();
      flat[b] = at::empty({n}, params_[buckets_[b][0]].options());
    }
    pending[b] = group_->broadcast_async(flat[b], owner);
  };
  if (!buckets_.empty()) issue(0);
  for (size_t b = 0; b < buckets_.size(); ++b) {
    if (b + 1 < buckets_.size()) issue(b + 1);  // two in flight
    pending[b].wait();
    if (owner_of_bucket(b) != me) {
      int64_t off = 0;
      for (size_t k : buckets_[b]) {
        auto p = params_[k].detach();
        const int64_t n = p.numel();
        p.copy_(flat[b].narrow(0, off, n).view_as(p));
        off += n;
      }
    }
    flat[b] = at::Tensor();
    pending[b] = {};
  }
}

void GradientAverager::average() {
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  overlap_ = Overlap{};
  overlap_.buckets = static_cast<int64_t>(buckets_.size());
  overlap_.started_in_backward = static_cast<int64_t>(s.next);  // the hooks start buckets in index order
  for (size_t b = 0; b < s.next; ++b)
    if (s.pending[b].done()) overlap_.bytes_finished_in_backward += s.flat_bytes[b];
  while (s.next < buckets_.size()) start(s.next++);
  const double inv = 1.0 / static_cast<double>(group_->world_size());
  for (size_t b = 0; b < buckets_.size(); ++b) {
    s.pending[b].wait();
    overlap_.bytes += s.flat_bytes[b];
    if (options_.reduce_to_owner() && owner_of_bucket(b) != group_->rank()) continue;  // not ours: dropped in start()
    s.flat[b].mul_(inv);
    int64_t off = 0;
    for (size_t k : buckets_[b]) {
      auto& g = params_[k].mutable_grad();
      const int64_t n = g.numel();
      g.copy_(s.flat[b].narrow(0, off, n).view_as(g));
      off += n;
    }
  }
  s.armed = false;
  s.next = 0;
  std::fill(s.ready.begin(), s.ready.end(), 0);
  for (size_t b = 0; b < buckets_.size(); ++b) {
    s.pending[b] = {};
    s.flat[b] = at::Tensor();
  }
}

// ---- the losses' all-gather ---------------------------------------------------------------

namespace {

/// all_gather whose backward sums every rank's gradient for this rank's slice (a reduce-scatter
/// done as all-reduce + narrow, as torch.distributed.nn's AllGather).
struct AllGatherWithGrad : public torch::autograd::Function<AllGatherWithGrad> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& local,
                                                int64_t group_address) {
    auto* group = reinterpret_cast<Group*>(group_address);
    ctx->saved_data["group"] = group_address;
    return group->all_gather(local.detach());
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* group = reinterpret_cast<Group*>(ctx->saved_data["group"].toInt());
    at::Tensor like;
    for (const auto& g : grads)
      if (g.defined()) like = g;
    std::vector<at::Tensor> parts;
    for (auto& g : grads) parts.push_back(g.defined() ? g.contiguous() : at::zeros_like(like));
    std::vector<at::Tensor> stacked{at::stack(parts)};  // [world, n, E]
    group->all_reduce_sum(stacked);
    return {stacked[0][group->rank()], at::Tensor()};
  }
};

}  // namespace

int64_t GroupGather::rank() const { return group_->rank(); }
int64_t GroupGather::world_size() const { return group_->world_size(); }

std::vector<at::Tensor> GroupGather::all_gather(const at::Tensor& local, bool with_grad) const {
  if (with_grad && local.requires_grad())
    return AllGatherWithGrad::apply(local, reinterpret_cast<int64_t>(group_.get()));
  return group_->all_gather(local.detach());
}

// ---- consistency ---------------------------------------------------------------------------

void broadcast_from_rank0(Group& group, const std::vector<at::Tensor>& tensors) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> ts(tensors.begin(), tensors.end());
  group.broadcast(ts, 0);
}

void check_identical(Group& group, const std::vector<at::Tensor>& tensors, const std::string& what) {
  uLong crc = crc32(0L, Z_NULL, 0);
  for (const auto& t : tensors) {
    auto c = t.detach().cpu().contiguous();
    crc = crc32_z(crc, static_cast<const Bytef*>(c.data_ptr()), static_cast<size_t>(c.numel() * c.element_size()));
  }
  const auto all = group.all_gather_strings(fmt::format("{:08x}", crc));  // host data: through the store
  for (int64_t r = 1; r < group.world_size(); ++r)
    if (all[r] != all[0])
      throw std::runtime_error(fmt::format("{}: rank {} differs from rank 0 (CRC-32 {} vs {})", what, r, all[r], all[0]));
}

}  // namespace torchclip::dist
