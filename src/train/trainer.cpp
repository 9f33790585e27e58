#include "train/trainer.h"

#include "config/emit.h"
#include "data/prefetch.h"
#include "distributed/dist.h"
#include "eval/evaluate.h"
#include "io/fsutil.h"
#include "loss/loss.h"
#include "optim/fused_adamw.h"
#include "optim/schedule.h"
#include "report/plot.h"
#include "train/checkpoint.h"
#include "train/metrics_log.h"
#include "train/step.h"
#include "util/device.h"
#include "util/progress.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <functional>
#include <optional>

namespace torchclip {
namespace fs = std::filesystem;

namespace {

std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) { g_signal = sig; }

/// Installs SIGINT/SIGTERM handlers for its lifetime.
class SignalScope {
 public:
  SignalScope() {
    g_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~SignalScope() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

/// This process's place in the job. Data parallel when a launcher set WORLD_SIZE > 1; rank 0
/// alone logs, evaluates and saves.
struct Job {
  dist::Env env;
  c10::Device device = c10::Device(c10::kCPU);  // train.device, resolved for this rank
  std::shared_ptr<dist::Group> group;  // nullptr: one process
  bool split_towers = false;  // dist.towers: split: 2 ranks, one tower each, the same batches
  int64_t stages = 1;         // dist.pipeline_stages: rank r is stage r % stages of replica r / stages
  bool main_rank() const { return env.rank == 0; }
  int64_t world() const { return env.world_size; }
  /// Whether every rank holds the whole model and its own slice of the data (plain data parallel).
  bool replicated() const { return !split_towers && stages == 1; }
  /// The ranks that read different data: all of them, one with split towers, one per pipeline
  /// replica (the stages of a replica read the same batches).
  int64_t data_world() const { return split_towers ? 1 : env.world_size / stages; }
  int64_t data_rank() const { return split_towers ? 0 : env.rank / stages; }
  /// Collective: the data ranks' loader positions in data-rank order.
  std::vector<std::string> loader_states(const std::string& mine) const {
    if (!group || split_towers) return {mine};
    const std::vector<std::string> all = group->all_gather_strings(mine);
    std::vector<std::string> out;
    for (size_t r = 0; r < all.size(); r += static_cast<size_t>(stages)) out.push_back(all[r]);  // each replica's first stage
    return out;
  }
  /// Runs `fn` on rank 0 while the others wait for it without a collective timeout.
  void on_rank0(const std::string& what, const std::function<void()>& fn) const {
    if (group) group->run_on_rank0(what, fn);
    else fn();
  }
};

Job join_job(const TrainConfig& cfg) {
  if (cfg.train().threads() > 0) at::set_num_threads(static_cast<int>(cfg.train().threads()));
  Job job;
  job.env = dist::Env::from_environment();
  check_layout(cfg, job.env.world_size);  // before any rendezvous: every rank fails alike
  job.split_towers = cfg.dist().towers() == Towers::kSplit;
  job.stages = cfg.dist().pipeline_stages();
  job.device = resolve_device(cfg.train().device(), "train.device", job.env.local_rank);
  if (job.device.is_cuda()) {
    // One GPU per rank (cuda:LOCAL_RANK for auto), current for every kernel this process runs.
    c10::impl::getDeviceGuardImpl(c10::kCUDA)->setDevice(job.device);
    at::globalContext().setAllowTF32CuBLAS(cfg.train().tf32());
    at::globalContext().setAllowTF32CuDNN(cfg.train().tf32());
  }
  if (job.env.distributed())
    job.group = dist::Group::init(job.env, dist::GroupOptions()
                                               .backend(enum_name(cfg.dist().backend()))
                                               .timeout_seconds(cfg.dist().timeout_seconds())
                                               .cuda(job.device.is_cuda()));
  return job;
}

/// Rank 0 locks the run folder, picks the checkpoint to resume (or the reason not to start) and
/// tells the others, so an error there stops every rank at once.
std::optional<std::string> choose_checkpoint(const Job& job, const TrainRunOptions& run, const fs::path& ckpt_root,
                                             std::optional<FolderLock>& lock) {
  std::string decision;  // "" fresh, "R:dir" resume, "E:message" error
  if (job.main_rank()) {
    try {
      // One training per run folder: a second one is refused while the first holds the lock.
      // Holding it, rank 0 may clear what interrupted writes (a crash, a full disk) left behind.
      lock.emplace(run.out_dir());
      fs::create_directories(ckpt_root);
      // Only the names torchclip writes there: the folder may hold the user's own files.
      std::vector<std::string> checkpoints;
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(ckpt_root, ec)) {
        const std::string n = e.path().filename().string();
        if (n.rfind("step-", 0) == 0 && is_temp_name(n)) checkpoints.push_back(n.substr(0, n.rfind(".tmp")));
      }
      const int stale = remove_stale_temps(run.out_dir(), {"train_config.yaml", "metrics.jsonl", "plot.png"}) +
                        remove_stale_temps(ckpt_root.string(), checkpoints);
      if (stale) fmt::print("removed {} temporaries of interrupted writes in {}\n", stale, run.out_dir());
      std::optional<std::string> from;
      if (run.resume() == "auto") from = latest_checkpoint(ckpt_root.string());
      else if (!run.resume().empty()) from = run.resume();
      if (from && !fs::is_directory(*from, ec))
        decision = fmt::format("E:--resume {}: no such checkpoint folder (give a checkpoints/step-N folder, or auto for "
                               "the newest in {})",
                               *from, ckpt_root.string());
      else if (from)
        decision = "R:" + *from;
      else if (run.resume().empty() && latest_checkpoint(ckpt_root.string()))
        decision = fmt::format("E:{} already has checkpoints; use --resume auto to continue it or another --out", run.out_dir());
    } catch (const std::exception& e) {
      decision = std::string("E:") + e.what();
    }
  }
  if (job.group) decision = job.group->broadcast_string(decision, 0);
  if (decision.rfind("E:", 0) == 0) throw std::runtime_error(decision.substr(2));
  if (decision.rfind("R:", 0) == 0) return decision.substr(2);
  return std::nullopt;
}

/// Every rank builds the same initial model (same seed, then rank 0's values broadcast), then
/// seeds its own stream with seed + rank, as OpenCLIP does.
CLIP build_model(const TrainConfig& cfg, const Job& job) {
  at::manual_seed(cfg.train().seed());
  CLIP model(cfg.model());
  model->set_grad_checkpointing(cfg.train().grad_checkpointing());
  model->to(job.device);
  model->train();
  if (job.group) {
    std::vector<at::Tensor> state;
    for (const auto& t : model->parameters()) state.push_back(t);
    for (const auto& t : model->buffers()) state.push_back(t);
    dist::broadcast_from_rank0(*job.group, state);
    at::manual_seed(cfg.train().seed() + static_cast<uint64_t>(job.env.rank));
  }
  return model;
}

data::CsvOptions csv_options(const DataCfg& d, bool with_label) {
  data::CsvOptions o;
  o.img_key(d.csv_img_key()).caption_key(d.csv_caption_key()).label_key(with_label ? d.csv_label_key() : "");
  if (d.csv_separator() == "\\t") o.separator('\t');
  else if (d.csv_separator().size() == 1) o.separator(d.csv_separator()[0]);
  return o;
}

/// data.normalize: uint8 batches normalised on the device (auto: when it is a GPU).
bool normalize_on_device(const DataCfg& d, const Job& job) {
  return d.normalize() == NormalizeOn::kDevice || (d.normalize() == NormalizeOn::kAuto && job.device.is_cuda());
}

data::LoaderOptions train_loader_options(const TrainConfig& cfg, const Job& job) {
  const DataCfg& d = cfg.data();
  return data::LoaderOptions()
      .batch_size(d.batch_size())
      .workers(d.workers())
      .seed(cfg.train().seed())
      .shuffle_buffer(d.shuffle_buffer())
      .rank(job.data_rank())
      .world_size(job.data_world())
      .context_length(cfg.model().text_cfg().context_length())
      .max_consecutive_failures(d.max_consecutive_failures())
      .pin_memory(job.device.is_cuda())
      .normalize(!normalize_on_device(d, job))
      .transform(data::ImageTransformOptions()
                     .image_size(cfg.model().vision_cfg().image_size())
                     .train(true)
                     .scale_min(d.scale()[0])
                     .scale_max(d.scale()[1])
                     .resize(d.resize()));
}

/// Optimizer steps of the run: train.steps, or train.epochs over a source of known size.
int64_t total_steps(const TrainConfig& cfg, const data::SampleSource& source, int64_t world) {
  const LoopCfg& loop = cfg.train();
  if (loop.steps() > 0) return loop.steps();
  const int64_t per_step = cfg.data().batch_size() * loop.accum_steps() * world;
  TORCH_CHECK(source.size() > 0, "train.epochs needs a data source of known size; set train.steps for shards");
  const int64_t total = loop.epochs() * (source.size() / per_step);
  TORCH_CHECK(total > 0, "data.train has fewer samples than one step needs (", per_step, ")");
  return total;
}

/// Zero-shot and retrieval evaluation on data.val (rank 0 only).
struct Evaluation {
  std::unique_ptr<data::Loader> loader;
  std::vector<std::string> classes, templates;

  static Evaluation make(const TrainConfig& cfg, std::shared_ptr<const Tokenizer> tokenizer, const Job& job) {
    Evaluation e;
    const DataCfg& d = cfg.data();
    if (d.val().empty() || !job.main_rank()) return e;
    if (!d.classes().empty()) {
      e.classes = read_lines(d.classes());
      e.templates = read_lines(d.templates());
    }
    auto csv = csv_options(d, !d.classes().empty()).num_classes(static_cast<int64_t>(e.classes.size()));
    e.loader = std::make_unique<data::Loader>(data::open_source(d.val(), csv), std::move(tokenizer),
                                              inference_loader_options(cfg.model(), 512, d.workers(), d.resize()));
    return e;
  }
};

/// The loader's position after a checkpoint of `saved` ranks, on `job`'s ranks.
void restore_loader(data::Loader& loader, TrainerState& st, const Job& job) {
  if (static_cast<int64_t>(st.loader_states.size()) == job.data_world()) {
    loader.resume(data::LoaderState::from_string(st.loader_states[job.data_rank()]));
    return;
  }
  // Another world size splits the data differently, so positions within the epoch do not carry
  // over: the interrupted epoch ends here and the next one starts on the new split.
  ++st.epoch;
  loader.start_epoch(st.epoch);
  if (job.main_rank())
    fmt::print("resuming {} rank(s) from a checkpoint of {}: the rest of epoch {} is skipped, epoch {} starts\n",
               job.data_world(), st.loader_states.size(), st.epoch - 1, st.epoch);
}

/// The process's peak resident memory (VmHWM), in bytes; 0 where /proc does not say.
int64_t peak_rss_bytes() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  return 0;
}

/// After a run's first step (when the optimizer state exists): each rank's parameter,
/// activation, optimizer-state and gradient bytes, counted from its tensors, and its peak RSS;
/// rank 0 prints them and writes a "memory" record to metrics.jsonl. Collective in a
/// distributed run.
void report_memory(const Job& job, const TrainStep& step, const StepResult& r, MetricsLog* metrics, int64_t at_step) {
  struct Column {
    const char *label, *key;
    int64_t mine;
    std::vector<int64_t> ranks;
  };
  std::vector<Column> columns = {{"parameters", "parameter_bytes", step.parameter_bytes(), {}},
                                 {"activations", "activation_bytes", r.activation_bytes, {}},  // -1: not measured
                                 {"optimizer state", "optimizer_state_bytes", step.optimizer_state_bytes(), {}},
                                 {"gradients", "gradient_bytes", r.gradient_bytes, {}},
                                 {"peak RSS", "peak_rss_bytes", peak_rss_bytes(), {}}};
  std::string mine;
  for (const auto& c : columns) mine += fmt::format("{} ", c.mine);
  const std::vector<std::string> all = job.group ? job.group->all_gather_strings(mine) : std::vector<std::string>{mine};
  if (!job.main_rank()) return;
  for (const auto& line : all) {
    std::istringstream in(line);
    for (auto& c : columns) {
      int64_t v = -1;
      in >> v;
      c.ranks.push_back(v);
    }
  }
  std::string text = "memory per rank (MiB):", json;
  for (const auto& c : columns) {
    text += fmt::format("{} {}", &c == &columns[0] ? "" : ",", c.label);
    for (int64_t b : c.ranks) text += b < 0 ? std::string(" n/a") : fmt::format(" {:.1f}", static_cast<double>(b) / (1 << 20));
    json += fmt::format("{}\"{}\": [{}]", json.empty() ? "" : ", ", c.key, fmt::join(c.ranks, ", "));
  }
  fmt::print("{}\n", text);
  if (metrics) metrics->write(fmt::format("{{\"step\": {}, \"memory\": {{{}}}}}", at_step, json));
}

/// Pipeline: the share of the steps' span each stage waited for a neighbour (the bubble), from
/// the summed times of `steps` steps ([1 + S]: span, busy per stage), against GPipe's
/// (S - 1) / (M + S - 1) for equal stages. Rank 0 prints it and writes a "pipeline" record.
void report_bubble(const TrainConfig& cfg, const at::Tensor& seconds, int64_t steps, MetricsLog* metrics, int64_t at_step) {
  const at::Tensor t = seconds.cpu();
  const int64_t S = t.numel() - 1, M = cfg.dist().micro_batches();
  const double span = t[0].item<double>();
  std::vector<double> busy, idle;
  for (int64_t k = 0; k < S; ++k) {
    busy.push_back(t[1 + k].item<double>());
    idle.push_back(span > 0 ? 1.0 - busy.back() / span : 0.0);
  }
  const double theory = static_cast<double>(S - 1) / static_cast<double>(M + S - 1);
  std::string shares;
  for (int64_t k = 0; k < S; ++k) shares += fmt::format("{}stage {} {:.1f}%", k ? ", " : "", k, 100 * idle[k]);
  fmt::print("pipeline bubble over {} steps (idle share of the span, per stage): {}; theory (S-1)/(M+S-1) = {:.1f}% "
             "(S={}, M={})\n",
             steps, shares, 100 * theory, S, M);
  if (metrics)
    metrics->write(fmt::format("{{\"step\": {}, \"pipeline\": {{\"stages\": {}, \"micro_batches\": {}, \"steps\": {}, "
                               "\"span_seconds\": {:.6f}, \"busy_seconds\": [{:.6f}], \"idle_share\": [{:.6f}], "
                               "\"theory\": {:.6f}}}}}",
                               at_step, S, M, steps, span, fmt::join(busy, ", "), fmt::join(idle, ", "), theory));
}

std::string json_metrics(const std::map<std::string, double>& m) {
  std::string s;
  for (const auto& [k, v] : m) s += fmt::format(", \"{}\": {:.17g}", k, v);
  return s;
}

}  // namespace

TrainRunResult train(const TrainConfig& cfg, const TrainRunOptions& run) {
  const LoopCfg& loop = cfg.train();
  const DataCfg& dc = cfg.data();
  const Job job = join_job(cfg);
  const int64_t global_batch = dc.batch_size() * loop.accum_steps() * job.data_world();  // samples per step, all ranks
  const fs::path out(run.out_dir()), ckpt_root = out / "checkpoints";
  std::optional<FolderLock> lock;  // rank 0's, for the whole run
  const std::optional<std::string> resume_from = choose_checkpoint(job, run, ckpt_root, lock);

  // The effective config: printed, saved beside the run and in every checkpoint.
  const std::string effective = to_yaml(cfg);
  if (job.main_rank()) {
    fmt::print("device: {}\n", job.device.str());
    if (resume_from) fmt::print("resuming from {}\n", *resume_from);
    else fmt::print("starting training with:\n{}\n", effective);
    if (job.split_towers)
      fmt::print("model parallel: image tower on rank 0, text tower on rank 1 ({} backend, rendezvous {}:{}), batch {}\n",
                 job.group->backend(), job.env.master_addr, job.env.master_port, global_batch);
    else if (job.stages > 1)
      fmt::print("pipeline parallel: {} stages x {} data-parallel replicas ({} backend, rendezvous {}:{}), {} micro-batches "
                 "of {}, global batch {}\n",
                 job.stages, job.data_world(), job.group->backend(), job.env.master_addr, job.env.master_port,
                 cfg.dist().micro_batches(), dc.batch_size() / cfg.dist().micro_batches(), global_batch);
    else if (job.group)
      fmt::print("data parallel: {} ranks ({} backend, rendezvous {}:{}), global batch {}{}\n", job.world(),
                 job.group->backend(), job.env.master_addr, job.env.master_port, global_batch,
                 cfg.dist().shard() == Shard::kNone
                     ? std::string()
                     : fmt::format(", ZeRO stage {} (dist.shard: {})", cfg.dist().shard() == Shard::kOptimizer ? 1 : 2,
                                   enum_name(cfg.dist().shard())));
    write_file_atomic((out / "train_config.yaml").string(), effective);
  }

  // Model, tokenizer, loss, optimizer and the shared training step.
  CLIP model = build_model(cfg, job);
  auto tokenizer = load_tokenizer(cfg.tokenizer());
  TORCH_CHECK(tokenizer->vocab_size() <= cfg.model().text_cfg().vocab_size(), "the tokenizer has ",
              tokenizer->vocab_size(), " ids but the model's text_cfg.vocab_size is ", cfg.model().text_cfg().vocab_size());
  auto loss_fn = make_loss(cfg.loss());
  if (!job.group && cfg.dist().shard() != Shard::kNone && job.main_rank())
    fmt::print("dist.shard: {} has no effect in one process (it shards over data-parallel ranks)\n",
               enum_name(cfg.dist().shard()));
  if (job.group && job.replicated()) loss_fn->set_distributed(std::make_shared<dist::GroupGather>(job.group), cfg.loss().distributed());
  FusedAdamW optimizer(param_groups(model, cfg.optim()));
  TrainStep step(model, loss_fn, optimizer,
                 StepOptions()
                     .precision(loop.precision())
                     .grad_clip(loop.grad_clip())
                     .group(job.group)
                     .bucket_bytes(static_cast<int64_t>(cfg.dist().bucket_mb() * (1 << 20)))
                     .shard(cfg.dist().shard())
                     .towers(cfg.dist().towers())
                     .pipeline_stages(cfg.dist().pipeline_stages())
                     .micro_batches(cfg.dist().micro_batches()));
  // Pipeline replicas: the last stages compare their features with each other's, as data
  // parallel ranks do.
  if (step.replica_group()) loss_fn->set_distributed(std::make_shared<dist::GroupGather>(step.replica_group()), cfg.loss().distributed());
  if (step.pipeline() && job.main_rank() && cfg.model().vision_cfg().is_resnet() && cfg.dist().micro_batches() > 1)
    fmt::print("note: the ModifiedResNet's BatchNorm normalises each of the {} micro-batches by its own statistics "
               "(as in GPipe), so this is not the one-process training on the whole batch; dist.micro_batches: 1 is\n",
               cfg.dist().micro_batches());
  if (step.pipeline()) {
    const auto [begin, end] = step.stage_blocks();
    const std::string line = fmt::format("stage {}: image blocks {}..{}{}{}", step.pipeline_stage(), begin, end - 1,
                                         step.pipeline_stage() == 0 ? " with the stem" : "",
                                         step.pipeline_stage() == job.stages - 1 ? ", the head, the text tower and the loss" : "");
    const auto lines = job.group->all_gather_strings(line);
    if (job.main_rank())
      for (int64_t k = 0; k < job.stages; ++k) fmt::print("  {}\n", lines[k]);
  }

  // Data.
  auto source = data::open_source(dc.train(), csv_options(dc, false));
  data::Loader loader(source, tokenizer, train_loader_options(cfg, job));
  const int64_t total = total_steps(cfg, *source, job.data_world());
  Evaluation evaluation = Evaluation::make(cfg, tokenizer, job);

  // Resume, or start.
  TrainerState st;
  if (resume_from) {
    // A checkpoint holds every parameter's state; a ZeRO or split-tower rank restores its share.
    st = load_checkpoint(*resume_from, model, optimizer, [&](const at::Tensor& p) { return step.owns_parameter(p); });
    if (st.step > total)
      throw std::runtime_error(fmt::format("{} is at step {}, past this run's {} steps (train.steps or train.epochs): "
                                           "raise them to continue training, or evaluate the checkpoint's model folder",
                                           *resume_from, st.step, total));
    restore_loader(loader, st, job);
    if (job.env.rank > 0) at::manual_seed(loop.seed() + static_cast<uint64_t>(job.env.rank) + static_cast<uint64_t>(st.step));
  } else {
    loader.start_epoch(0);
  }
  step.release_unowned_parameters();  // split towers: each rank keeps its own tower
  std::optional<MetricsLog> metrics;  // rank 0 only
  if (job.main_rank()) metrics.emplace((out / "metrics.jsonl").string(), resume_from ? st.step : -1);

  TrainRunResult result;
  SignalScope signals;
  const bool progress = run.progress() && job.main_rank();
  Progress bar("train", total, "step");
  if (progress) bar.advance(st.step);
  double wait_before = loader.stats().wait_seconds;
  data::DeviceFeed feed(loader, job.device, data::DeviceFeedOptions().trim_text(
                                              TextTransformerImpl::padding_can_be_cut(cfg.model().text_cfg())));
  auto next_batches = [&] {
    std::vector<MicroBatch> micro(loop.accum_steps());
    for (auto& m : micro) {
      data::DeviceBatch b = feed.next();
      st.epoch = b.epoch;
      m = {b.images, b.texts};
    }
    return micro;
  };
  auto run_eval = [&](const char* when) {
    if (!evaluation.loader) return std::map<std::string, double>{};
    auto r = evaluate(model, *tokenizer, *evaluation.loader, evaluation.classes, evaluation.templates,
                      loop.precision() == Precision::kBf16, progress);
    metrics->write(fmt::format("{{\"step\": {}, \"eval\": \"{}\"{}}}", st.step, when, json_metrics(r.metrics)));
    std::string line = fmt::format("eval at step {}:", st.step);
    for (const char* k : {"zeroshot_top1", "zeroshot_top5", "image_to_text_R@1", "text_to_image_R@1"})
      if (r.metrics.count(k)) line += fmt::format(" {} {:.4f}", k, r.metrics.at(k));
    fmt::print("{}\n", line);
    return r.metrics;
  };
  auto checkpoint = [&] {
    const std::string mine = feed.state().to_string();
    st.loader_states = job.loader_states(mine);
    step.gather_parameters();       // split towers: rank 0 saves the whole model
    step.gather_optimizer_state();  // ZeRO, split towers: consolidated on rank 0, so any layout can resume
    job.on_rank0(fmt::format("checkpoint at step {}", st.step), [&] {
      result.checkpoint = save_checkpoint(ckpt_root.string(), model, optimizer, st, cfg.tokenizer(), effective,
                                          loop.keep_checkpoints());
    });
    step.release_unowned_state();
    step.release_unowned_parameters();
  };

  // The loop: one shared step, then bookkeeping, logging, evaluation and checkpoints. A step's
  // results stay on the device and are read (one copy: the loop's only sync) at read points:
  // log steps, evaluations, checkpoints, the end, and a signal in a one-process run. In between
  // the host queues step k + 1 while the device still runs step k. A non-finite step is skipped
  // on the device (nothing changes) and still counts as a step, as under OpenCLIP's GradScaler;
  // the counts of skipped steps are device tensors read at the same points.
  const int64_t start_step = st.step;
  int64_t bar_at = st.step;  // the step the progress bar shows
  const auto counter = at::TensorOptions().dtype(at::kFloat).device(job.device);
  at::Tensor skipped_in_row = at::full({}, static_cast<double>(st.nonfinite_in_row), counter);  // 0-d
  at::Tensor skipped_total = at::full({}, static_cast<double>(st.nonfinite_total), counter);    // 0-d
  auto window_start = std::chrono::steady_clock::now();  // since the last read point
  int64_t window_steps = 0;
  step.measure_activations_next_step();  // for the memory report after the first step
  at::Tensor pipeline_seconds;  // [1 + S] summed over the steps after the first (report_bubble)
  int64_t pipeline_steps = 0;
  while (st.step < total) {
    const auto t0 = std::chrono::steady_clock::now();
    const double lr = learning_rate(cfg.schedule(), cfg.optim().lr(), st.step, total);
    const bool signalled = g_signal != 0;
    const StepResult r = step.run(next_batches(), lr, signalled);
    if (r.pipeline_seconds.defined() && st.step > start_step) {  // the first step warms up
      pipeline_seconds = pipeline_seconds.defined() ? pipeline_seconds + r.pipeline_seconds : r.pipeline_seconds;
      ++pipeline_steps;
    }
    skipped_in_row = (skipped_in_row + 1) * r.skipped;  // 0 after an applied step
    skipped_total = skipped_total + r.skipped;
    ++st.step;
    ++window_steps;
    if (st.step == start_step + 1) report_memory(job, step, r, metrics ? &*metrics : nullptr, st.step);
    st.samples_seen += global_batch;
    if (job.group && cfg.dist().check_every() > 0 && st.step % cfg.dist().check_every() == 0) {
      const std::string what = fmt::format("parameters after step {}", st.step);
      if (job.replicated()) dist::check_identical(*job.group, model->parameters(), what);
      else if (step.replica_group()) dist::check_identical(*step.replica_group(), step.owned_parameters(), what);  // a stage's replicas
    }
    st.train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const bool log_point = st.step % loop.log_every() == 0 || st.step == total;
    const bool eval_point = loop.eval_every() > 0 && st.step % loop.eval_every() == 0 && st.step < total;
    const bool limit = run.stop_after() > 0 && st.step - start_step >= run.stop_after();
    const bool checkpoint_point = (loop.checkpoint_every() > 0 && st.step % loop.checkpoint_every() == 0) || limit ||
                                  st.step == total;
    // Ranks agree on a stop when they read; one process acts on its own signal at once.
    if (!log_point && !eval_point && !checkpoint_point && !(signalled && !job.group)) continue;

    const std::vector<double> v = read_scalars({r.loss, r.grad_norm, r.skipped, r.stop, skipped_in_row, skipped_total});
    const double loss = v[0], grad_norm = v[1];
    const bool applied = v[2] == 0, stop_asked = v[3] > 0;
    st.nonfinite_in_row = static_cast<int64_t>(v[4]);
    st.nonfinite_total = static_cast<int64_t>(v[5]);
    if (!applied && metrics)
      metrics->write(fmt::format("{{\"step\": {}, \"skipped\": \"non-finite\", \"loss\": \"{}\", \"nonfinite_total\": {}}}",
                                 st.step, loss, st.nonfinite_total));
    if (st.nonfinite_in_row >= loop.max_nonfinite_steps()) {
      throw std::runtime_error(fmt::format(
          "training stopped: {} steps in a row had a non-finite loss or gradient (last: loss {}, gradient norm {} at "
          "step {}); lower optim.lr, set train.grad_clip, or try precision fp32",
          st.nonfinite_in_row, loss, grad_norm, st.step));
    }
    const double window = std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count();
    const double waited = loader.stats().wait_seconds - wait_before;
    if (log_point && applied) {
      const at::Tensor scale = step.logit_scale();  // collective in a pipeline
      const double logit_scale = job.main_rank() ? scale.exp().item<double>() : 0.0;
      const double samples_per_second = window > 0 ? window_steps * global_batch / window : 0.0;  // the whole job's
      const double wait_share = window > 0 ? waited / window : 0.0;
      if (metrics)
        metrics->write(fmt::format(
            "{{\"step\": {}, \"epoch\": {}, \"loss\": {:.17g}, \"lr\": {:.17g}, \"logit_scale\": {:.9g}, \"grad_norm\": "
            "{:.9g}, \"samples_per_second\": {:.3f}, \"data_wait\": {:.4f}, \"time\": {:.3f}{}}}",
            st.step, st.epoch, loss, lr, logit_scale, grad_norm, samples_per_second,
            wait_share, st.train_seconds,
            st.nonfinite_total > 0 ? fmt::format(", \"nonfinite_total\": {}", st.nonfinite_total) : std::string()));
      if (progress)
        bar.advance(st.step - bar_at, fmt::format("loss {:.4f} lr {:.2e} {:.0f} samples/s data wait {:.0f}%", loss, lr,
                                                  samples_per_second, 100 * wait_share));
      bar_at = st.step;
    }
    window_start = std::chrono::steady_clock::now();
    window_steps = 0;
    wait_before = loader.stats().wait_seconds;
    if (eval_point) {
      step.gather_parameters();  // split towers: rank 0 evaluates the whole model
      job.on_rank0(fmt::format("evaluation at step {}", st.step), [&] { run_eval("periodic"); });
      step.release_unowned_parameters();
    }
    const bool interrupted = job.group ? stop_asked : signalled;
    const bool stop = interrupted || limit;
    if (checkpoint_point || stop) checkpoint();
    if (stop) {
      result.interrupted = interrupted;
      if (result.interrupted && job.main_rank()) fmt::print(stderr, "\nsignal: checkpoint saved at step {}\n", st.step);
      break;
    }
  }
  if (progress) bar.finish();
  if (pipeline_steps > 0 && job.main_rank()) report_bubble(cfg, pipeline_seconds, pipeline_steps, metrics ? &*metrics : nullptr, st.step);
  result.steps = st.step;
  result.train_seconds = st.train_seconds;
  result.nonfinite_steps = st.nonfinite_total;
  if (st.step == total && !result.interrupted) step.gather_parameters();  // for the final evaluation
  if (st.step == total && !result.interrupted && job.main_rank()) {
    result.eval = run_eval("final");
    if (data::have_image_decoders()) plot_metrics((out / "metrics.jsonl").string(), (out / "plot.png").string());
    else fmt::print("no plot.png: this build has no OpenCV (TORCHCLIP_OPENCV=OFF); metrics.jsonl has the figures\n");
  }
  return result;
}

}  // namespace torchclip
