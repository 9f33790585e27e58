#include "train/trainer.h"

#include "data/loader.h"
#include "dist/dist.h"
#include "io/fsutil.h"
#include "loss/loss.h"
#include "optim/fused_adamw.h"
#include "train/checkpoint.h"
#include "train/evaluate.h"
#include "train/plot.h"
#include "util/autocast.h"
#include "util/progress.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>

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

data::CsvOptions csv_options(const DataCfg& d, bool with_label) {
  data::CsvOptions o;
  o.img_key(d.csv_img_key()).caption_key(d.csv_caption_key()).label_key(with_label ? d.csv_label_key() : "");
  if (d.csv_separator() == "\\t") o.separator('\t');
  else if (d.csv_separator().size() == 1) o.separator(d.csv_separator()[0]);
  return o;
}

/// AdamW parameter groups as OpenCLIP: no weight decay for biases, norms, embeddings, logit_scale.
std::vector<torch::optim::OptimizerParamGroup> param_groups(CLIP& model, const OptimCfg& o) {
  std::vector<at::Tensor> decay, no_decay;
  for (const auto& p : model->named_parameters()) {
    const std::string& n = p.key();
    const bool exclude = p.value().dim() < 2 || n.find("bn") != std::string::npos || n.find("ln") != std::string::npos ||
                         n.find("bias") != std::string::npos || n.find("logit_scale") != std::string::npos ||
                         n.find("embedding") != std::string::npos;
    (exclude ? no_decay : decay).push_back(p.value());
  }
  auto opts = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(o.lr()).betas({o.betas()[0], o.betas()[1]}).eps(o.eps()).weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, opts(o.weight_decay()));
  groups.emplace_back(no_decay, opts(0.0));
  return groups;
}

std::string json_metrics(const std::map<std::string, double>& m) {
  std::string s;
  for (const auto& [k, v] : m) s += fmt::format(", \"{}\": {:.17g}", k, v);
  return s;
}

/// Keeps metrics.jsonl lines of steps up to `step` (after a resume, later lines are redone).
void truncate_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept;
  for (std::string line; std::getline(in, line);) {
    const size_t p = line.find("\"step\": ");
    if (p != std::string::npos && std::stoll(line.substr(p + 8)) > step) continue;
    kept += line + "\n";
  }
  write_file_atomic(path, kept);
}

}  // namespace

double learning_rate(const ScheduleCfg& s, double base, int64_t step, int64_t total) {
  if (step < s.warmup_steps()) return base * (step + 1) / s.warmup_steps();
  if (s.name() == "const") return base;
  if (s.name() == "const-cooldown") {
    const int64_t start = total - s.cooldown_steps();
    if (step < start || s.cooldown_steps() == 0) return base;
    const double frac = static_cast<double>(step - start) / s.cooldown_steps();
    return base + (s.min_lr() - base) * frac;
  }
  const int64_t e = step - s.warmup_steps(), es = std::max<int64_t>(1, total - s.warmup_steps());
  return s.min_lr() + 0.5 * (1 + std::cos(M_PI * e / es)) * (base - s.min_lr());
}

TrainRunResult train(const TrainConfig& cfg, const TrainRunOptions& run) {
  const LoopCfg& loop = cfg.train();
  const DataCfg& dc = cfg.data();
  if (loop.threads() > 0) at::set_num_threads(static_cast<int>(loop.threads()));
  // Data parallel when a launcher set WORLD_SIZE > 1: rank 0 alone logs, evaluates and saves.
  const dist::Env env = dist::Env::from_environment();
  std::shared_ptr<dist::Group> group;
  if (env.distributed())
    group = dist::Group::init(
        env, dist::GroupOptions().backend(cfg.dist().backend()).timeout_seconds(cfg.dist().timeout_seconds()));
  const bool main_rank = env.rank == 0;
  const int64_t world = env.world_size;
  const bool progress = run.progress() && main_rank;
  const fs::path out(run.out_dir()), ckpt_root = out / "checkpoints";
  // Rank 0 picks the checkpoint to resume (or the reason not to start) and tells the others.
  std::string decision;  // "" fresh, "R:dir" resume, "E:message" error
  if (main_rank) {
    fs::create_directories(ckpt_root);
    std::optional<std::string> from;
    if (run.resume() == "auto") from = latest_checkpoint(ckpt_root.string());
    else if (!run.resume().empty()) from = run.resume();
    if (from) decision = "R:" + *from;
    else if (run.resume().empty() && latest_checkpoint(ckpt_root.string()))
      decision = fmt::format("E:{} already has checkpoints; use --resume auto to continue it or another --out", run.out_dir());
  }
  if (group) decision = group->broadcast_string(decision, 0);
  if (decision.rfind("E:", 0) == 0) throw std::runtime_error(decision.substr(2));
  std::optional<std::string> resume_from;
  if (decision.rfind("R:", 0) == 0) resume_from = decision.substr(2);
  const std::string effective = to_yaml(cfg);
  if (main_rank) {
    if (!resume_from) {
      fmt::print("starting training with:\n{}\n", effective);
    } else {
      fmt::print("resuming from {}\n", *resume_from);
    }
    if (group)
      fmt::print("data parallel: {} ranks ({} backend, rendezvous {}:{}), global batch {}\n", world, group->backend(),
                 env.master_addr, env.master_port, dc.batch_size() * loop.accum_steps() * world);
    write_file_atomic((out / "train_config.yaml").string(), effective);
  }

  // Every rank builds the same initial model (same seed, then rank 0's values broadcast), then
  // seeds its own stream with seed + rank, as OpenCLIP does.
  at::manual_seed(loop.seed());
  CLIP model(cfg.model());
  model->train();
  if (group) {
    std::vector<at::Tensor> state;
    for (const auto& t : model->parameters()) state.push_back(t);
    for (const auto& t : model->buffers()) state.push_back(t);
    dist::broadcast_from_rank0(*group, state);
    at::manual_seed(loop.seed() + static_cast<uint64_t>(env.rank));
  }
  auto tokenizer = load_tokenizer(cfg.tokenizer());
  TORCH_CHECK(tokenizer->vocab_size() <= cfg.model().text_cfg().vocab_size(), "the tokenizer has ",
              tokenizer->vocab_size(), " ids but the model's text_cfg.vocab_size is ", cfg.model().text_cfg().vocab_size());
  auto loss_fn = make_loss(cfg.loss());
  if (group) loss_fn->set_distributed(std::make_shared<dist::GroupGather>(group), cfg.loss().distributed());
  FusedAdamW optimizer(param_groups(model, cfg.optim()));

  auto source = data::open_source(dc.train(), csv_options(dc, false));
  const int64_t S = cfg.model().vision_cfg().image_size(), ctx = cfg.model().text_cfg().context_length();
  data::Loader loader(source, tokenizer,
                      data::LoaderOptions()
                          .batch_size(dc.batch_size())
                          .workers(dc.workers())
                          .seed(loop.seed())
                          .shuffle_buffer(dc.shuffle_buffer())
                          .rank(env.rank)
                          .world_size(world)
                          .context_length(ctx)
                          .max_consecutive_failures(dc.max_consecutive_failures())
                          .transform(data::ImageTransformOptions()
                                         .image_size(S)
                                         .train(true)
                                         .scale_min(dc.scale()[0])
                                         .scale_max(dc.scale()[1])
                                         .resize(data::parse_resize_mode(dc.resize(), "data.resize"))));
  int64_t total = loop.steps();
  if (total == 0) {
    TORCH_CHECK(source->size() > 0, "train.epochs needs a data source of known size; set train.steps for shards");
    total = loop.epochs() * (source->size() / dc.batch_size() / loop.accum_steps() / world);
    TORCH_CHECK(total > 0, "data.train has fewer samples than one step needs (", dc.batch_size() * loop.accum_steps() * world, ")");
  }

  std::unique_ptr<data::Loader> val_loader;
  std::vector<std::string> classes, templates;
  if (!dc.val().empty() && main_rank) {
    val_loader = std::make_unique<data::Loader>(
        data::open_source(dc.val(), csv_options(dc, !dc.classes().empty())), tokenizer,
        data::LoaderOptions().batch_size(512).workers(dc.workers()).shuffle(false).drop_last(false).context_length(ctx).transform(
            data::ImageTransformOptions().image_size(S).resize(data::parse_resize_mode(dc.resize(), "data.resize"))));
    if (!dc.classes().empty()) {
      classes = read_lines(dc.classes());
      templates = read_lines(dc.templates());
    }
  }

  TrainerState st;
  if (resume_from) {
    st = load_checkpoint(*resume_from, model, optimizer);
    if (static_cast<int64_t>(st.loader_states.size()) == world) {
      loader.resume(data::LoaderState::from_string(st.loader_states[env.rank]));
    } else {
      // Another world size splits the data differently, so positions within the epoch do not
      // carry over: the interrupted epoch ends here and the next one starts on the new split.
      ++st.epoch;
      loader.start_epoch(st.epoch);
      if (main_rank)
        fmt::print("resuming {} rank(s) from a checkpoint of {}: the rest of epoch {} is skipped, epoch {} starts\n", world,
                   st.loader_states.size(), st.epoch - 1, st.epoch);
    }
    if (env.rank > 0) at::manual_seed(loop.seed() + static_cast<uint64_t>(env.rank) + static_cast<uint64_t>(st.step));
    if (main_rank) truncate_metrics((out / "metrics.jsonl").string(), st.step);
  } else {
    loader.start_epoch(0);
    if (main_rank) std::ofstream(out / "metrics.jsonl", std::ios::trunc);
  }
  std::ofstream metrics;  // rank 0 only
  if (main_rank) metrics.open(out / "metrics.jsonl", std::ios::app);
  std::unique_ptr<dist::GradientAverager> averager;
  if (group)
    averager = std::make_unique<dist::GradientAverager>(group, model->parameters(),
                                                        static_cast<int64_t>(cfg.dist().bucket_mb() * (1 << 20)));

  TrainRunResult result;
  const bool bf16 = loop.precision() == "bf16";
  const int64_t accum = loop.accum_steps();
  auto params = model->parameters();
  SignalScope signals;
  Progress bar("train", total, "step");
  if (progress) bar.advance(st.step);
  double wait_before = loader.stats().wait_seconds;
  auto next_batch = [&](data::Batch& b) {
    while (!loader.next(b)) {
      ++st.epoch;
      loader.start_epoch(st.epoch);
    }
  };
  auto run_eval = [&](const char* when) {
    if (!val_loader) return std::map<std::string, double>{};
    auto r = evaluate(model, *tokenizer, *val_loader, classes, templates, bf16, progress);
    metrics << fmt::format("{{\"step\": {}, \"eval\": \"{}\"{}}}\n", st.step, when, json_metrics(r.metrics)) << std::flush;
    std::string line = fmt::format("eval at step {}:", st.step);
    for (const char* k : {"zeroshot_top1", "zeroshot_top5", "image_to_text_R@1", "text_to_image_R@1"})
      if (r.metrics.count(k)) line += fmt::format(" {} {:.4f}", k, r.metrics.at(k));
    fmt::print("{}\n", line);
    return r.metrics;
  };
  // Work only rank 0 does; the others wait for it without a collective timeout.
  auto on_rank0 = [&](const std::string& what, const std::function<void()>& fn) {
    if (group) group->run_on_rank0(fmt::format("{} at step {}", what, st.step), fn);
    else fn();
  };
  auto checkpoint = [&] {
    const std::string mine = loader.state().to_string();
    st.loader_states = group ? group->all_gather_strings(mine) : std::vector<std::string>{mine};
    on_rank0("checkpoint", [&] {
      result.checkpoint = save_checkpoint(ckpt_root.string(), model, optimizer, st, cfg.tokenizer(), effective,
                                          loop.keep_checkpoints());
    });
  };

  const int64_t start_step = st.step;
  while (st.step < total) {
    const auto t0 = std::chrono::steady_clock::now();
    const double lr = learning_rate(cfg.schedule(), cfg.optim().lr(), st.step, total);
    for (auto& g : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    optimizer.zero_grad();
    std::vector<data::Batch> micro(accum);
    for (auto& b : micro) next_batch(b);
    at::Tensor loss;
    at::Tensor scale;
    if (accum == 1) {
      LossInput in;
      {
        AutocastGuard autocast(at::kCPU, bf16);
        auto o = model->forward(micro[0].images, micro[0].texts);
        in = {o.image_features.to(at::kFloat), o.text_features.to(at::kFloat), o.logit_scale, o.logit_bias};
      }
      loss = loss_fn->forward(in);
      loss.backward();
    } else {
      // OpenCLIP's accumulation: features of every micro-batch without gradient, then for each
      // micro-batch its features again with gradient, the loss over all of them, backward.
      std::vector<at::Tensor> cached_img, cached_txt;
      {
        torch::NoGradGuard no_grad;
        AutocastGuard autocast(at::kCPU, bf16);
        for (auto& b : micro) {
          auto o = model->forward(b.images, b.texts);
          cached_img.push_back(o.image_features.to(at::kFloat));
          cached_txt.push_back(o.text_features.to(at::kFloat));
        }
      }
      for (int64_t j = 0; j < accum; ++j) {
        LossInput in;
        {
          AutocastGuard autocast(at::kCPU, bf16);
          auto o = model->forward(micro[j].images, micro[j].texts);
          auto imgs = cached_img, txts = cached_txt;
          imgs[j] = o.image_features.to(at::kFloat);
          txts[j] = o.text_features.to(at::kFloat);
          in = {at::cat(imgs), at::cat(txts), o.logit_scale, o.logit_bias};
        }
        loss = loss_fn->forward(in);
        loss.backward();
      }
    }
    // Across ranks: gradients averaged; the logged loss is the mean of the ranks' losses, and a
    // signal on any rank stops all of them at the same step.
    double loss_value = loss.item<double>();
    bool signalled = g_signal != 0;
    if (group) {
      averager->average();
      std::vector<at::Tensor> v{at::tensor({loss_value, signalled ? 1.0 : 0.0}, at::kDouble)};
      group->all_reduce_sum(v);
      loss_value = v[0][0].item<double>() / static_cast<double>(world);
      signalled = v[0][1].item<double>() > 0;
    }
    // A non-finite loss or gradient leaves parameters, optimizer and schedule untouched.
    at::Tensor norm = at::zeros({}, at::kDouble);
    for (const auto& p : params)
      if (p.grad().defined()) norm += p.grad().to(at::kDouble).pow(2).sum();
    const double grad_norm = std::sqrt(norm.item<double>());
    if (!std::isfinite(loss_value) || !std::isfinite(grad_norm)) {
      ++st.nonfinite_total;
      if (++st.nonfinite_in_row >= loop.max_nonfinite_steps()) {
        throw std::runtime_error(fmt::format(
            "training stopped: {} steps in a row had a non-finite loss or gradient (last: loss {}, gradient norm {} at "
            "step {}); lower optim.lr, set train.grad_clip, or try precision fp32",
            st.nonfinite_in_row, loss_value, grad_norm, st.step));
      }
      if (main_rank)
        metrics << fmt::format("{{\"step\": {}, \"skipped\": \"non-finite\", \"loss\": \"{}\"}}\n", st.step, loss_value);
      optimizer.zero_grad();
      continue;
    }
    st.nonfinite_in_row = 0;
    if (loop.grad_clip() > 0) torch::nn::utils::clip_grad_norm_(params, loop.grad_clip());
    optimizer.step();
    model->clamp_logit_scale();
    ++st.step;
    st.samples_seen += dc.batch_size() * accum * world;
    if (group && cfg.dist().check_every() > 0 && st.step % cfg.dist().check_every() == 0)
      dist::check_identical(*group, params, fmt::format("parameters after step {}", st.step));
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    st.train_seconds += dt;
    const double waited = loader.stats().wait_seconds - wait_before;
    wait_before = loader.stats().wait_seconds;
    const double samples_per_second = dc.batch_size() * accum * world / dt;  // the whole job's
    if (main_rank)
      metrics << fmt::format(
          "{{\"step\": {}, \"epoch\": {}, \"loss\": {:.17g}, \"lr\": {:.17g}, \"logit_scale\": {:.9g}, \"grad_norm\": {:.9g}, "
          "\"samples_per_second\": {:.3f}, \"data_wait\": {:.4f}, \"time\": {:.3f}}}\n",
          st.step, st.epoch, loss_value, lr, model->logit_scale.exp().item<double>(), grad_norm, samples_per_second,
          dt > 0 ? waited / dt : 0.0, st.train_seconds);
    if (progress)
      bar.advance(1, fmt::format("loss {:.4f} lr {:.2e} {:.0f} samples/s data wait {:.0f}%", loss_value, lr,
                                 samples_per_second, 100 * (dt > 0 ? waited / dt : 0.0)));
    if (loop.eval_every() > 0 && st.step % loop.eval_every() == 0 && st.step < total)
      on_rank0("evaluation", [&] { run_eval("periodic"); });
    const bool stop = signalled || (run.stop_after() > 0 && st.step - start_step >= run.stop_after());
    if ((loop.checkpoint_every() > 0 && st.step % loop.checkpoint_every() == 0) || stop || st.step == total) checkpoint();
    if (stop) {
      result.interrupted = signalled;
      if (result.interrupted && main_rank) fmt::print(stderr, "\nsignal: checkpoint saved at step {}\n", st.step);
      break;
    }
  }
  if (progress) bar.finish();
  if (main_rank) metrics.flush();
  result.steps = st.step;
  result.train_seconds = st.train_seconds;
  result.nonfinite_steps = st.nonfinite_total;
  if (st.step == total && !result.interrupted && main_rank) {
    result.eval = run_eval("final");
    plot_metrics((out / "metrics.jsonl").string(), (out / "plot.png").string());
  }
  return result;
}

}  // namespace torchclip
