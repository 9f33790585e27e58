#include "config/train_config.h"

#include "config/reader.h"
#include "util/device.h"

#include <fmt/format.h>

#include <filesystem>

namespace torchclip {
namespace {

using detail::Reader;


/// Constraints between keys (single keys are bounded in config/schema.h).
void validate(const TrainConfig& c) {
  const DataCfg& d = c.data();
  if (d.train().empty()) detail::invalid(c.source(), "data.train", "is required (a .csv/.tsv file, tar shards or synthetic:N)");
  if (!(d.scale()[0] > 0 && d.scale()[0] <= d.scale()[1] && d.scale()[1] <= 1))
    detail::invalid(c.source(), "data.scale", "must be [min, max] with 0 < min <= max <= 1");
  if (d.csv_separator().size() > 1 && d.csv_separator() != "\\t")
    detail::invalid(c.source(), "data.csv_separator", "must be one character or \\t");
  if (!d.val().empty() && (d.classes().empty() != d.templates().empty()))
    detail::invalid(c.source(), "data.classes", "zero-shot evaluation needs both data.classes and data.templates");
  const OptimCfg& o = c.optim();
  if (!(o.betas()[0] >= 0 && o.betas()[0] < 1 && o.betas()[1] >= 0 && o.betas()[1] < 1))
    detail::invalid(c.source(), "optim.betas", "must be two numbers in [0, 1)");
  if (c.schedule().min_lr() > o.lr())
    detail::invalid(c.source(), "schedule.min_lr", fmt::format("must not exceed optim.lr ({}), got {}", o.lr(), c.schedule().min_lr()));
  const LoopCfg& t = c.train();
  if (!valid_device_name(t.device()))
    detail::invalid(c.source(), "train.device", fmt::format("\"{}\" is not a device; valid: auto, cpu, cuda, cuda:N", t.device()));
  if (t.steps() == 0 && t.epochs() == 0) detail::invalid(c.source(), "train.steps", "set train.steps > 0 or train.epochs > 0");
  if (c.loss().name() == "siglip" && !c.model().init_logit_bias())
    detail::invalid(c.source(), "loss.name", "siglip needs a model with init_logit_bias (e.g. -10) and init_logit_scale ln 10");
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
    std::error_code ec;
    if (ref.find('/') != std::string::npos && !std::filesystem::exists(ref, ec) && std::filesystem::exists(beside, ec))
      ref = beside.string();
    c.model(load_model_config(ref));
  }
  r.get("tokenizer", c.tokenizer());
  detail::ReadVisitor v(r);
  visit_sections(v, c);
  r.finish();
  validate(c);
  return c;
}

void check_layout(const TrainConfig& cfg, int64_t world_size) {
  const DistCfg& d = cfg.dist();
  const int64_t stages = d.pipeline_stages();
  if (stages > 1) {
    const VisionCfg& v = cfg.model().vision_cfg();
    const int64_t blocks = v.is_resnet() ? v.layers()[0] + v.layers()[1] + v.layers()[2] + v.layers()[3] : v.layers()[0];
    if (stages > blocks)
      detail::invalid(cfg.source(), "dist.pipeline_stages",
                      fmt::format("{} stages, but the image tower ({}) has {} residual blocks to cut; valid: 1..{}", stages,
                                  cfg.model_name(), blocks, blocks));
    if (world_size % stages != 0)
      detail::invalid(cfg.source(), "dist.pipeline_stages",
                      fmt::format("{} stages do not divide the world of {} ranks (ranks = stages x data-parallel replicas; "
                                  "use --nproc {} or a multiple of it)",
                                  stages, world_size, stages));
    if (d.towers() == Towers::kSplit)
      detail::invalid(cfg.source(), "dist.towers", "split with dist.pipeline_stages > 1; choose one kind of model parallelism");
    if (d.shard() != Shard::kNone)
      detail::invalid(cfg.source(), "dist.shard",
                      fmt::format("'{}' with dist.pipeline_stages > 1; valid with a pipeline: none", enum_name(d.shard())));
    if (cfg.train().accum_steps() != 1)
      detail::invalid(cfg.source(), "train.accum_steps",
                      fmt::format("{} with a pipeline; its micro-batches are dist.micro_batches (accum_steps: 1)",
                                  cfg.train().accum_steps()));
    if (cfg.data().batch_size() % d.micro_batches() != 0)
      detail::invalid(cfg.source(), "dist.micro_batches",
                      fmt::format("{} micro-batches do not divide data.batch_size {}", d.micro_batches(), cfg.data().batch_size()));
  } else if (d.micro_batches() != 1) {
    detail::invalid(cfg.source(), "dist.micro_batches",
                    fmt::format("{} without a pipeline (dist.pipeline_stages: 1); to accumulate micro-batches in one stage "
                                "use train.accum_steps",
                                d.micro_batches()));
  }
  if (d.towers() != Towers::kSplit) return;
  if (world_size != 2)
    detail::invalid(cfg.source(), "dist.towers",
                    fmt::format("split puts the image tower on rank 0 and the text tower on rank 1, so it needs exactly 2 "
                                "ranks, not {} (use --nproc 2, or dist.towers: together)",
                                world_size));
  if (d.shard() != Shard::kNone)
    detail::invalid(cfg.source(), "dist.shard",
                    fmt::format("'{}' shards data parallelism, which split towers do not have (each parameter lives on one "
                                "rank already); valid with dist.towers: split: none",
                                enum_name(d.shard())));
  if (cfg.train().accum_steps() != 1)
    detail::invalid(cfg.source(), "train.accum_steps",
                    fmt::format("{} with dist.towers: split; split towers train one batch per step (accum_steps: 1)",
                                cfg.train().accum_steps()));
}

}  // namespace torchclip
