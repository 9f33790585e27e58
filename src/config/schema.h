// The config schema: every key of every config struct, listed once. The reader
// (config/reader.h, ReadVisitor) and the emitter (config/emit.cpp, EmitVisitor) both walk these
// lists, so adding a key means adding one line here (and the member in its struct).
//
// A visitor V provides:
//   v.field(key, member [, Bound])   a typed value (numbers, bools, strings, enums, lists)
//   v.child(key, struct)             a nested mapping, visited with its own visit_fields
//   v.inert(key, value, what)        an OpenCLIP key accepted only at its inert default
//   v.ignore({keys})                 OpenCLIP keys that only matter when a rejected key is set
//   V::kReading                      true while parsing (the emitter writes what is there)
#pragma once

#include "config/loss_config.h"
#include "config/model_config.h"
#include "config/train_config.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <string>

namespace torchclip {

/// A numeric range a key must lie in. NaN and the infinities never do (`.inf` as a learning rate
/// or a margin is a typo, not a setting). Every numeric key has one, with an upper end where a
/// larger value would only allocate or loop without end.
struct Bound {
  double lo = -std::numeric_limits<double>::infinity(), hi = std::numeric_limits<double>::infinity();
  bool lo_open = false, hi_open = false;

  /// [lo, hi].
  static Bound between(double lo, double hi) { return {lo, hi, false, false}; }
  /// (lo, hi]: a value that must stay above lo (a learning rate, a temperature).
  static Bound above(double lo, double hi) { return {lo, hi, true, false}; }

  bool contains(double v) const {
    return std::isfinite(v) && (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
  }
  /// "must be in [1, 1048576]", "must be in (0, 10]".
  std::string describe() const {
    return fmt::format("must be in {}{}, {}{}", lo_open ? "(" : "[", lo, hi, hi_open ? ")" : "]");
  }
};

// ---- model (OpenCLIP's model_configs/*.json fields) -----------------------------------------

template <typename V>
void visit_inert_block_keys(V& v) {
  v.inert("output_tokens", "false", "output_tokens");
  v.inert("act_kwargs", "null", "act_kwargs");
  v.inert("norm_kwargs", "null", "norm_kwargs");
  v.inert("block_type", "default", "a custom block_type");
  for (const char* k : {"qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc"})
    v.inert(k, "false", k);
}

template <typename V>
void visit_fields(V& v, VisionCfg& c) {
  v.field("layers", c.layers());
  v.field("width", c.width());
  v.field("head_width", c.head_width());
  v.field("mlp_ratio", c.mlp_ratio());
  v.nullable_field("patch_size", c.patch_size());  // OpenCLIP's ResNet configs say `patch_size: null`
  v.field("image_size", c.image_size());
  v.field("ls_init_value", c.ls_init_value());
  v.field("patch_dropout", c.patch_dropout());
  v.field("no_ln_pre", c.no_ln_pre());
  v.field("pool_type", c.pool_type());
  v.field("final_ln_after_pool", c.final_ln_after_pool());
  v.inert("attentional_pool", "false", "attentional pooling (CoCa)");
  v.inert("pos_embed_type", "learnable", "a vision pos_embed_type other than learnable");
  visit_inert_block_keys(v);
  v.inert("timm_model_name", "null", "a timm image tower");
  v.ignore({"attn_pooler_queries", "attn_pooler_heads", "timm_model_pretrained", "timm_pool", "timm_proj",
            "timm_proj_bias", "timm_drop", "timm_drop_path"});
}

template <typename V>
void visit_fields(V& v, TextCfg& c) {
  v.field("context_length", c.context_length());
  v.field("vocab_size", c.vocab_size());
  v.field("width", c.width());
  v.field("heads", c.heads());
  v.field("layers", c.layers());
  v.field("mlp_ratio", c.mlp_ratio());
  v.field("ls_init_value", c.ls_init_value());
  v.field("pad_id", c.pad_id());
  v.field("eos_id", c.eos_id());
  v.field("no_causal_mask", c.no_causal_mask());
  v.field("pool_type", c.pool_type());
  v.field("proj_bias", c.proj_bias());
  v.field("proj_type", c.proj_type());
  v.field("pos_embed_type", c.pos_embed_type());
  v.inert("embed_cls", "false", "embed_cls (CoCa)");
  v.inert("final_ln_after_pool", "false", "final_ln_after_pool for text (OpenCLIP's CLIP ignores it too)");
  visit_inert_block_keys(v);
  v.inert("hf_model_name", "null", "a Hugging Face text tower");
  v.inert("hf_tokenizer_name", "null", "a Hugging Face tokenizer");
  v.ignore({"hf_model_pretrained", "hf_proj_type", "hf_pooler_type", "tokenizer_mode", "tokenizer_kwargs"});
}

template <typename V>
void visit_fields(V& v, ModelConfig& c) {
  v.field("embed_dim", c.embed_dim());
  v.field("quick_gelu", c.quick_gelu());
  v.field("custom_text", c.custom_text());
  v.field("init_logit_scale", c.init_logit_scale());
  v.field("init_logit_bias", c.init_logit_bias());
  v.field("nonscalar_logit_scale", c.nonscalar_logit_scale());
  v.child("vision_cfg", c.vision_cfg());
  v.child("text_cfg", c.text_cfg());
}

// ---- losses ---------------------------------------------------------------------------------

template <typename V>
void visit_fields(V&, ClipLossOptions&) {}
template <typename V>
void visit_fields(V&, SigLipLossOptions&) {}

template <typename V>
void visit_fields(V& v, InfoNCELossOptions& o) {
  v.field("direction", o.direction());
  v.field("temperature", o.temperature(), Bound::above(0, 1e6));
}

template <typename V>
void visit_fields(V& v, ContrastiveLossOptions& o) {
  v.field("margin", o.margin(), Bound::between(0, 1e6));
  v.field("distance", o.distance());
}

template <typename V>
void visit_fields(V& v, TripletLossOptions& o) {
  v.field("margin", o.margin(), Bound::between(0, 1e6));
  v.field("distance", o.distance());
  v.field("mining", o.mining());
}

template <typename V>
void visit_fields(V& v, LossConfig& c) {
  v.choice("name", c.name(), loss_names());
  if constexpr (V::kReading) c.options(default_loss_options(c.name()));
  v.field("local_loss", c.distributed().local_loss());
  v.field("gather_with_grad", c.distributed().gather_with_grad());
  std::visit([&](auto& options) { visit_fields(v, options); }, c.options());
}

// ---- training -------------------------------------------------------------------------------

template <typename V>
void visit_fields(V& v, DataCfg& d) {
  v.field("train", d.train());
  v.field("val", d.val());
  v.field("csv_img_key", d.csv_img_key());
  v.field("csv_caption_key", d.csv_caption_key());
  v.field("csv_label_key", d.csv_label_key());
  v.field("csv_separator", d.csv_separator());
  v.field("classes", d.classes());
  v.field("templates", d.templates());
  v.field("batch_size", d.batch_size(), Bound::between(1, 1 << 20));
  v.field("workers", d.workers(), Bound::between(1, 256));
  v.field("shuffle_buffer", d.shuffle_buffer(), Bound::between(0, 1e7));
  v.field("scale", d.scale());
  v.field("resize", d.resize());
  v.field("normalize", d.normalize());
  v.field("max_consecutive_failures", d.max_consecutive_failures(), Bound::between(1, 1e12));
}

template <typename V>
void visit_fields(V& v, OptimCfg& o) {
  v.field("lr", o.lr(), Bound::above(0, 10));
  v.field("betas", o.betas());
  v.field("eps", o.eps(), Bound::above(0, 1));
  v.field("weight_decay", o.weight_decay(), Bound::between(0, 100));
}

template <typename V>
void visit_fields(V& v, ScheduleCfg& s) {
  v.field("name", s.name());
  v.field("warmup_steps", s.warmup_steps(), Bound::between(0, 1e12));
  v.field("cooldown_steps", s.cooldown_steps(), Bound::between(0, 1e12));
  v.field("min_lr", s.min_lr(), Bound::between(0, 10));
}

template <typename V>
void visit_fields(V& v, LoopCfg& t) {
  v.field("epochs", t.epochs(), Bound::between(0, 1e6));
  v.field("steps", t.steps(), Bound::between(0, 1e12));
  v.field("device", t.device());
  v.field("precision", t.precision());
  v.field("tf32", t.tf32());
  v.field("grad_clip", t.grad_clip(), Bound::between(0, 1e6));
  v.field("accum_steps", t.accum_steps(), Bound::between(1, 1024));
  v.field("grad_checkpointing", t.grad_checkpointing());
  v.field("seed", t.seed());
  v.field("threads", t.threads(), Bound::between(0, 1024));
  v.field("eval_every", t.eval_every(), Bound::between(0, 1e12));
  v.field("checkpoint_every", t.checkpoint_every(), Bound::between(0, 1e12));
  v.field("keep_checkpoints", t.keep_checkpoints(), Bound::between(1, 1e6));
  v.field("max_nonfinite_steps", t.max_nonfinite_steps(), Bound::between(1, 1e12));
  v.field("log_every", t.log_every(), Bound::between(1, 1e12));
}

template <typename V>
void visit_fields(V& v, DistCfg& d) {
  v.field("backend", d.backend());
  v.field("timeout_seconds", d.timeout_seconds(), Bound::above(0, 7 * 24 * 3600));
  v.field("bucket_mb", d.bucket_mb(), Bound::above(0, 1 << 16));
  v.field("check_every", d.check_every(), Bound::between(0, 1e12));
  v.field("shard", d.shard());
  v.field("towers", d.towers());
  v.field("pipeline_stages", d.pipeline_stages(), Bound::between(1, 1024));
  v.field("micro_batches", d.micro_batches(), Bound::between(1, 1 << 20));
}

/// The sections of a training config after `model` and `tokenizer` (which name other files and
/// are read by load_train_config itself).
template <typename V>
void visit_sections(V& v, TrainConfig& c) {
  v.child("data", c.data());
  v.child("loss", c.loss());
  v.child("optim", c.optim());
  v.child("schedule", c.schedule());
  v.child("train", c.train());
  v.child("dist", c.dist());
}

}  // namespace torchclip
