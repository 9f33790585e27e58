#include "train/train_config.h"

#include "config_reader.h"

#include <filesystem>

namespace torchclip {
namespace {

using detail::Reader;

void read_pair(Reader& r, const std::string& key, std::array<double, 2>& out) {

  if (!r.has(key)) {
    r.ignore({key.c_str()});
    return;
  }
  r.ignore({key.c_str()});
  YAML::Node n = r.node()[key];
  if (!n.IsSequence() || n.size() != 2) r.fail(n, "expected a list of two numbers", key);
  try {
    out = {n[0].as<double>(), n[1].as<double>()};
  } catch (const YAML::Exception&) {
    r.fail(n, "expected a list of two numbers", key);
  }
}

[[noreturn]] void invalid(const TrainConfig& c, const std::string& key, const std::string& msg) {
  throw ConfigError(fmt::format("{}: {}: {}", c.source(), key, msg));
}

void validate(const TrainConfig& c) {
  const DataCfg& d = c.data();
  if (d.train().empty()) invalid(c, "data.train", "is required (a .csv/.tsv file, tar shards or synthetic:N)");
  if (d.batch_size() <= 0) invalid(c, "data.batch_size", "must be positive");
  if (d.workers() <= 0) invalid(c, "data.workers", "must be positive");
  if (!(d.scale()[0] > 0 && d.scale()[0] <= d.scale()[1] && d.scale()[1] <= 1))
    invalid(c, "data.scale", "must be [min, max] with 0 < min <= max <= 1");
  if (d.resize() != "pil" && d.resize() != "fast")
    invalid(c, "data.resize", fmt::format("unknown mode '{}'; valid: pil, fast", d.resize()));
  if (d.csv_separator().size() > 1 && d.csv_separator() != "\\t")
    invalid(c, "data.csv_separator", "must be one character or \\t");
  if (!d.val().empty() && (d.classes().empty() != d.templates().empty()))
    invalid(c, "data.classes", "zero-shot evaluation needs both data.classes and data.templates");
  const OptimCfg& o = c.optim();
  if (!(o.lr() > 0)) invalid(c, "optim.lr", "must be > 0");
  if (!(o.betas()[0] >= 0 && o.betas()[0] < 1 && o.betas()[1] >= 0 && o.betas()[1] < 1))
    invalid(c, "optim.betas", "must be two numbers in [0, 1)");
  if (!(o.eps() > 0)) invalid(c, "optim.eps", "must be > 0");
  if (o.weight_decay() < 0) invalid(c, "optim.weight_decay", "must be >= 0");
  const ScheduleCfg& s = c.schedule();
  if (s.warmup_steps() < 0 || s.cooldown_steps() < 0) invalid(c, "schedule.warmup_steps", "must be >= 0");
  const LoopCfg& t = c.train();
  if (t.steps() < 0 || t.epochs() < 0 || (t.steps() == 0 && t.epochs() == 0))
    invalid(c, "train.steps", "set train.steps > 0 or train.epochs > 0");
  if (t.accum_steps() < 1) invalid(c, "train.accum_steps", "must be >= 1");
  if (t.grad_clip() < 0) invalid(c, "train.grad_clip", "must be >= 0 (0 turns clipping off)");
  if (t.keep_checkpoints() < 1) invalid(c, "train.keep_checkpoints", "must be >= 1");
  if (t.max_nonfinite_steps() < 1) invalid(c, "train.max_nonfinite_steps", "must be >= 1");
  if (t.log_every() < 1) invalid(c, "train.log_every", "must be >= 1");
  const DistCfg& x = c.dist();
  if (!(x.timeout_seconds() > 0)) invalid(c, "dist.timeout_seconds", "must be > 0");
  if (!(x.bucket_mb() > 0)) invalid(c, "dist.bucket_mb", "must be > 0");
  if (x.check_every() < 0) invalid(c, "dist.check_every", "must be >= 0 (0: never)");
  if (c.loss().name() == "siglip" && !c.model().init_logit_bias())
    invalid(c, "loss.name", "siglip needs a model with init_logit_bias (e.g. -10) and init_logit_scale ln 10");
}

}  // namespace

TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides) {
  YAML::Node root = detail::load_yaml_file(path);
  for (const auto& o : overrides) detail::apply_override(root, o);
  TrainConfig c;
  c.source(path);
  Reader r(root, path, "");
  // model: a name or path, or an inline mapping of model fields.
  YAML::Node m = root["model"];
  r.ignore({"model"});
  if (m && m.IsMap()) {
    c.model_name("<inline>");
    c.model(parse_model_config(m, path + " (model)"));
  } else {
    r.get("model", c.model_name());
    std::string ref = c.model_name();
    // A relative path is taken relative to the training config's folder if it exists there.
    auto beside = std::filesystem::path(path).parent_path() / ref;
    if (ref.find('/') != std::string::npos && !std::filesystem::exists(ref) && std::filesystem::exists(beside))
      ref = beside.string();
    c.model(load_model_config(ref));
  }
  r.get("tokenizer", c.tokenizer());
  {
    Reader d = r.child("data");
    DataCfg& x = c.data();
    d.get("train", x.train());
    d.get("val", x.val());
    d.get("csv_img_key", x.csv_img_key());
    d.get("csv_caption_key", x.csv_caption_key());
    d.get("csv_label_key", x.csv_label_key());
    d.get("csv_separator", x.csv_separator());
    d.get("classes", x.classes());
    d.get("templates", x.templates());
    d.get("batch_size", x.batch_size());
    d.get("workers", x.workers());
    d.get("shuffle_buffer", x.shuffle_buffer());
    read_pair(d, "scale", x.scale());
    d.get("resize", x.resize());
    d.get("max_consecutive_failures", x.max_consecutive_failures());
    d.finish();
  }
  if (root["loss"]) {
    r.ignore({"loss"});
    c.loss(parse_loss_config(root["loss"], path));
  } else {
    r.ignore({"loss"});
  }
  {
    Reader o = r.child("optim");
    o.get("lr", c.optim().lr());
    read_pair(o, "betas", c.optim().betas());
    o.get("eps", c.optim().eps());
    o.get("weight_decay", c.optim().weight_decay());
    o.finish();
  }
  {
    Reader s = r.child("schedule");
    s.get_choice("name", c.schedule().name(), {"cosine", "const", "const-cooldown"});
    s.get("warmup_steps", c.schedule().warmup_steps());
    s.get("cooldown_steps", c.schedule().cooldown_steps());
    s.get("min_lr", c.schedule().min_lr());
    s.finish();
  }
  {
    Reader t = r.child("train");
    LoopCfg& x = c.train();
    t.get("epochs", x.epochs());
    t.get("steps", x.steps());
    t.get_choice("precision", x.precision(), {"fp32", "bf16"});
    t.get("grad_clip", x.grad_clip());
    t.get("accum_steps", x.accum_steps());
    int64_t seed = static_cast<int64_t>(x.seed());
    t.get("seed", seed);
    x.seed(static_cast<uint64_t>(seed));
    t.get("threads", x.threads());
    t.get("eval_every", x.eval_every());
    t.get("checkpoint_every", x.checkpoint_every());
    t.get("keep_checkpoints", x.keep_checkpoints());
    t.get("max_nonfinite_steps", x.max_nonfinite_steps());
    t.get("log_every", x.log_every());
    t.finish();
  }
  {
    Reader t = r.child("dist");
    DistCfg& x = c.dist();
    t.get_choice("backend", x.backend(), {"auto", "gloo", "nccl"});
    t.get("timeout_seconds", x.timeout_seconds());
    t.get("bucket_mb", x.bucket_mb());
    t.get("check_every", x.check_every());
    t.finish();
  }
  r.finish();
  validate(c);
  return c;
}

std::string to_yaml(const TrainConfig& c) {
  auto q = [](const std::string& v) {  // a YAML double-quoted scalar
    std::string out = "\"";
    for (char ch : v) out += (ch == '"' || ch == '\\') ? std::string("\\") + ch : std::string(1, ch);
    return out + "\"";
  };
  const DataCfg& d = c.data();
  const OptimCfg& o = c.optim();
  const ScheduleCfg& s = c.schedule();
  const LoopCfg& t = c.train();
  std::string loss = fmt::format("  name: {}\n  local_loss: {}\n  gather_with_grad: {}\n", c.loss().name(),
                                 c.loss().distributed().local_loss(), c.loss().distributed().gather_with_grad());
  std::visit(
      [&](const auto& opt) {
        using T = std::decay_t<decltype(opt)>;
        if constexpr (std::is_same_v<T, InfoNCELossOptions>) {
          loss += fmt::format("  direction: {}\n", opt.direction());
          if (opt.temperature()) loss += fmt::format("  temperature: {}\n", *opt.temperature());
        } else if constexpr (std::is_same_v<T, ContrastiveLossOptions>) {
          loss += fmt::format("  margin: {}\n  distance: {}\n", opt.margin(), opt.distance());
        } else if constexpr (std::is_same_v<T, TripletLossOptions>) {
          loss += fmt::format("  margin: {}\n  distance: {}\n  mining: {}\n", opt.margin(), opt.distance(), opt.mining());
        }
      },
      c.loss().options());
  std::string model;
  for (const auto& line : [&] {
         std::vector<std::string> lines;
         std::string y = to_yaml(c.model());
         for (size_t p = 0; p < y.size();) {
           size_t nl = y.find('\n', p);
           lines.push_back(y.substr(p, nl - p));
           p = nl == std::string::npos ? y.size() : nl + 1;
         }
         return lines;
       }()) {
    if (!line.empty()) model += "  " + line + "\n";
  }
  return fmt::format(
      "# effective training config (from {}, model {})\n"
      "model:\n{}"
      "tokenizer: {}\n"
      "data:\n  train: {}\n  val: {}\n  csv_img_key: {}\n  csv_caption_key: {}\n  csv_label_key: {}\n"
      "  csv_separator: {}\n  classes: {}\n  templates: {}\n  batch_size: {}\n  workers: {}\n"
      "  shuffle_buffer: {}\n  scale: [{}, {}]\n  resize: {}\n  max_consecutive_failures: {}\n"
      "loss:\n{}"
      "optim:\n  lr: {}\n  betas: [{}, {}]\n  eps: {}\n  weight_decay: {}\n"
      "schedule:\n  name: {}\n  warmup_steps: {}\n  cooldown_steps: {}\n  min_lr: {}\n"
      "train:\n  epochs: {}\n  steps: {}\n  precision: {}\n  grad_clip: {}\n  accum_steps: {}\n  seed: {}\n"
      "  threads: {}\n  eval_every: {}\n  checkpoint_every: {}\n  keep_checkpoints: {}\n  max_nonfinite_steps: {}\n"
      "  log_every: {}\n"
      "dist:\n  backend: {}\n  timeout_seconds: {}\n  bucket_mb: {}\n  check_every: {}\n",
      c.source(), c.model_name(), model, q(c.tokenizer()), q(d.train()), q(d.val()), q(d.csv_img_key()),
      q(d.csv_caption_key()), q(d.csv_label_key()), q(d.csv_separator()), q(d.classes()), q(d.templates()), d.batch_size(), d.workers(), d.shuffle_buffer(),
      d.scale()[0], d.scale()[1], d.resize(), d.max_consecutive_failures(), loss, o.lr(), o.betas()[0], o.betas()[1], o.eps(),
      o.weight_decay(), s.name(), s.warmup_steps(), s.cooldown_steps(), s.min_lr(), t.epochs(), t.steps(), t.precision(),
      t.grad_clip(), t.accum_steps(), t.seed(), t.threads(), t.eval_every(), t.checkpoint_every(), t.keep_checkpoints(),
      t.max_nonfinite_steps(), t.log_every(), c.dist().backend(), c.dist().timeout_seconds(), c.dist().bucket_mb(),
      c.dist().check_every());
}

}  // namespace torchclip
