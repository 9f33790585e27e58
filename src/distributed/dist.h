// Data-parallel training on LibTorch's own c10d: a TCPStore rendezvous, Gloo (CPU) or NCCL (CUDA)
// process groups, bucketed gradient averaging, and the all-gather the losses use for negatives
// from other ranks (OpenCLIP's gather_with_grad). Processes find each other through the
// environment torchrun and SLURM launchers set; `launch_local` plays torchrun for one machine.
//
// Only dist.cpp includes the c10d headers; everything else sees this interface.
#pragma once

#include "loss/loss.h"

#include <torch/arg.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace torchclip::dist {

/// Where this process sits in a job: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR
/// and MASTER_PORT, as torchrun sets them (SLURM launchers export the same names).
struct Env {
  int64_t rank = 0, world_size = 1, local_rank = 0, local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 29500;
  /// torchrun's agent already serves the TCPStore at MASTER_ADDR:MASTER_PORT
  /// (TORCHELASTIC_USE_AGENT_STORE=True): every rank connects as a client, and keys are prefixed
  /// by the restart attempt (TORCHELASTIC_RESTART_COUNT), as torch.distributed does.
  bool agent_store = false;
  int64_t restart_count = 0;
  bool distributed() const { return world_size > 1; }
  /// Reads the variables above; with none of them set, a single process. A malformed or
  /// inconsistent value (RANK >= WORLD_SIZE, a port outside 1..65535, WORLD_SIZE set without
  /// RANK) throws std::invalid_argument naming the variable.
  static Env from_environment();
};

struct GroupOptions {
  /// "auto" (gloo for CPU tensors, nccl for CUDA ones), "gloo" or "nccl".
  TORCH_ARG(std::string, backend) = "auto";
  /// Rendezvous and every collective give up after this long, with an error naming what it waited for.
  TORCH_ARG(double, timeout_seconds) = 300;
  /// The tensors this group reduces live on CUDA device LOCAL_RANK.
  TORCH_ARG(bool, cuda) = false;
};

/// Backends this build can create ("gloo", and "nccl" in a CUDA build with NCCL headers).
std::vector<std::string> available_backends();

/// A c10d process group over every rank of the job. Errors (a peer that died, a timeout) are
/// rethrown as std::runtime_error naming the operation, this rank and the backend's message.
class Group {
 public:
  /// Rendezvous through a TCPStore at MASTER_ADDR:MASTER_PORT (rank 0 serves it) and creates the
  /// backend. Throws within the timeout when the address is wrong, the port is taken or a peer
  /// never arrives.
  static std::shared_ptr<Group> init(const Env& env, const GroupOptions& options);
  ~Group();

  /// This process's rank in the group and the group's size (the job's, unless new_group made it).
  int64_t rank() const;
  int64_t world_size() const;
  const std::string& backend() const;

  /// A group of some of this group's ranks (`ranks`, in this group's numbering; this rank must be
  /// one of them), on the same store and backend, as torch.distributed.new_group. Only its
  /// members call it, each with the same `ranks` and `name` (it prefixes the rendezvous keys, with
  /// a count of this name's groups so far, and names the group in errors).
  std::shared_ptr<Group> new_group(const std::vector<int64_t>& ranks, const std::string& name);

  /// In-place sum over ranks of each tensor (same shapes on every rank).
  void all_reduce_sum(std::vector<at::Tensor>& tensors);
  /// Starts an in-place sum over ranks of `tensor` without waiting: `wait()` finishes it (errors
  /// name the operation and this rank), `done()` says whether it has finished.
  struct Pending {
    std::function<void()> wait;
    std::function<bool()> done;
  };
  Pending all_reduce_sum_async(const at::Tensor& tensor);
  /// Starts a sum over ranks of `tensor` into `root`'s copy (other ranks' copies are undefined
  /// afterwards).
  Pending reduce_sum_async(const at::Tensor& tensor, int64_t root);
  /// Starts an in-place broadcast of `tensor` from `root`.
  Pending broadcast_async(const at::Tensor& tensor, int64_t root);
  /// Point to point: starts sending `tensor` to rank `to`, or receiving rank `from`'s into
  /// `tensor` (same shape and dtype as sent). Messages between two ranks arrive in the order sent;
  /// a tensor must stay alive, unchanged, until its wait().
  Pending send_async(const at::Tensor& tensor, int64_t to);
  Pending recv_async(const at::Tensor& tensor, int64_t from);
  /// Every rank's `local` in rank order; shapes must match across ranks.
  std::vector<at::Tensor> all_gather(const at::Tensor& local);
  /// In-place broadcast from `root`.
  void broadcast(std::vector<at::Tensor>& tensors, int64_t root);
  /// Every rank's string in rank order (any lengths), through the store (so NCCL groups can too).
  std::vector<std::string> all_gather_strings(const std::string& local);
  /// `root`'s string on every rank.
  std::string broadcast_string(const std::string& value, int64_t root);
  void barrier();
  /// Runs `fn` on rank 0 while the other ranks wait for it through the store, with no collective
  /// timeout (evaluation or a large checkpoint may take longer than dist.timeout_seconds). If
  /// rank 0 throws, every rank throws, naming `what`; if rank 0 dies, the others fail at once.
  /// `what` must be unique per call (e.g. include the step).
  void run_on_rank0(const std::string& what, const std::function<void()>& fn);

  struct Impl;

 private:
  explicit Group(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// ZeRO's partition of `params` over `world` ranks: whole tensors (as torch's
/// ZeroRedundancyOptimizer), in reverse order (the order backward produces gradients) cut into
/// `world` contiguous runs of about equal bytes. Returns each parameter's owner; a rank may own
/// nothing when there are fewer parameters than ranks.
std::vector<int64_t> partition_parameters(const std::vector<at::Tensor>& params, int64_t world);

struct AveragerOptions {
  TORCH_ARG(int64_t, bucket_bytes) = 25 << 20;
  /// ZeRO: owners[k] is the rank that updates params[k] (partition_parameters); buckets never
  /// span two owners, and broadcast_from_owners() sends each bucket from its owner. Empty: none.
  TORCH_ARG(std::vector<int64_t>, owners) = {};
  /// ZeRO stage 2: each bucket is summed onto its owner alone (the bucket's part of a
  /// reduce-scatter), and every other rank drops those gradients as soon as the bucket is packed,
  /// so after average() a rank holds only the gradients of the parameters it owns.
  TORCH_ARG(bool, reduce_to_owner) = false;
};

/// Averages gradients over ranks, like DDP: parameters are packed into buckets of about
/// `bucket_bytes` (in reverse order, the order backward produces their gradients), and each bucket
/// is one flat all-reduce. With `arm()` before a backward, a hook on every parameter's gradient
/// accumulation starts a bucket's all-reduce as soon as backward has produced all of its
/// gradients, so communication overlaps the rest of backward; `average()` then starts any bucket
/// not started yet, waits for all, and writes the averages back. A parameter without a gradient
/// counts as zeros, so every rank issues the same collectives in the same order.
class GradientAverager {
 public:
  GradientAverager(std::shared_ptr<Group> group, std::vector<at::Tensor> params, AveragerOptions options = {});
  ~GradientAverager();
  GradientAverager(const GradientAverager&) = delete;
  GradientAverager& operator=(const GradientAverager&) = delete;

  /// The next backward is the last of this step (the only one, or the last micro-batch's): its
  /// gradients start their buckets' all-reduces as they become ready.
  void arm();
  /// After arm(): `param`'s gradient is already final (an earlier backward of this step wrote
  /// it, e.g. the loss's for logit_scale), so its bucket does not wait for a hook that will not come.
  void mark_ready(const at::Tensor& param);
  /// Completes the averaging (after backward). Without arm(), every bucket starts here.
  void average();
  int64_t buckets() const { return static_cast<int64_t>(buckets_.size()); }

  /// With owners: whether this rank updates params[k].
  bool owns(size_t k) const;
  /// With owners, after the owners updated their parameters: every rank receives each bucket's
  /// new values from its owner (a bucket at a time, two in flight, so the transient memory is
  /// two buckets, not a model).
  void broadcast_from_owners();

  /// Of the last average(): the buckets, how many the hooks started during backward, and the
  /// gradient bytes in all and of the all-reduces already finished when backward returned.
  struct Overlap {
    int64_t buckets = 0, started_in_backward = 0;
    int64_t bytes = 0, bytes_finished_in_backward = 0;
  };
  const Overlap& last_overlap() const { return overlap_; }

  struct State;

 private:
  void on_gradient(size_t param);  // a hook: param's gradient is accumulated
  void start(size_t bucket);
  int64_t owner_of_bucket(size_t b) const;

  std::shared_ptr<Group> group_;
  std::vector<at::Tensor> params_;
  AveragerOptions options_;
  std::vector<std::vector<size_t>> buckets_;  // indices into params_
  std::unique_ptr<State> state_;
  Overlap overlap_;
};

/// The losses' view of the other ranks (loss.h). With `with_grad`, gradients flow back through
/// the gather: the backward all-reduces (sums) the gradient of every rank's copy and keeps this
/// rank's slice, as torch.distributed.nn.all_gather does.
class GroupGather : public FeatureGather {
 public:
  explicit GroupGather(std::shared_ptr<Group> group) : group_(std::move(group)) {}
  int64_t rank() const override;
  int64_t world_size() const override;
  std::vector<at::Tensor> all_gather(const at::Tensor& local, bool with_grad) const override;

 private:
  std::shared_ptr<Group> group_;
};

/// Copies rank 0's values into every rank's tensors (parameters and buffers at start).
void broadcast_from_rank0(Group& group, const std::vector<at::Tensor>& tensors);

/// Verifies every rank holds bit-identical tensors (a CRC-32 of their bytes is compared); throws
/// naming the first rank that differs from rank 0 and `what`.
void check_identical(Group& group, const std::vector<at::Tensor>& tensors, const std::string& what);

}  // namespace torchclip::dist
