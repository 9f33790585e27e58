// The one YAML parser. Every key read goes through Reader, which knows the file, the line and the
// dotted key path, so every message can say exactly where the problem is and what is allowed.
#include "config.h"

#include "config_reader.h"

#include "loss/loss_options.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>

namespace torchclip {

namespace detail {

YAML::Node load_yaml_file(const std::string& path) {
  try {
    return YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    throw ConfigError(fmt::format("{}: cannot open the file", path));
  } catch (const YAML::ParserException& e) {
    throw ConfigError(fmt::format("{}:{}: not valid YAML: {}", path, e.mark.line + 1, e.msg));
  }
}

void apply_override(YAML::Node& root, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw ConfigError(fmt::format("override '{}': expected KEY=VALUE with a dotted key, e.g. optim.lr=1e-3", assignment));
  const std::string key = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    size_t dot = key.find('.', start);
    parts.push_back(key.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  YAML::Node parsed(std::string{});  // "key=" sets an empty string
  try {
    if (!value.empty()) parsed = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    throw ConfigError(fmt::format("override '{}': the value is not valid YAML: {}", assignment, e.msg));
  }
  // yaml-cpp nodes are handles: walk with copies of the handles, assigning through them.
  std::vector<YAML::Node> path = {root};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node next = path.back()[parts[i]];
    if (next.IsDefined() && !next.IsNull() && !next.IsMap())
      throw ConfigError(fmt::format("override '{}': '{}' is not a mapping", assignment, parts[i]));
    if (!next.IsDefined() || next.IsNull()) path.back()[parts[i]] = YAML::Node(YAML::NodeType::Map);
    path.push_back(path.back()[parts[i]]);
  }
  path.back()[parts.back()] = parsed;
}

}  // namespace detail

namespace {

namespace fs = std::filesystem;
using detail::Reader;

void read_inert_block_keys(Reader& r) {
  r.inert("output_tokens", "false", "output_tokens");
  r.inert("act_kwargs", "null", "act_kwargs");
  r.inert("norm_kwargs", "null", "norm_kwargs");
  r.inert("block_type", "default", "a custom block_type");
  for (const char* k : {"qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc"})
    r.inert(k, "false", k);
}

void read_vision(Reader r, VisionCfg& v) {
  r.get("layers", v.layers());
  r.get("width", v.width());
  r.get("head_width", v.head_width());
  r.get("mlp_ratio", v.mlp_ratio());
  if (r.has("patch_size") && r.node()["patch_size"].IsNull()) {
    r.ignore({"patch_size"});  // OpenCLIP's ResNet configs say `patch_size: null`
  } else {
    r.get("patch_size", v.patch_size());
  }
  r.get("image_size", v.image_size());
  r.get("ls_init_value", v.ls_init_value());
  r.get("patch_dropout", v.patch_dropout());
  r.get("no_ln_pre", v.no_ln_pre());
  r.get_choice("pool_type", v.pool_type(), {"tok", "avg"});
  r.get("final_ln_after_pool", v.final_ln_after_pool());
  r.inert("attentional_pool", "false", "attentional pooling (CoCa)");
  r.inert("pos_embed_type", "learnable", "a vision pos_embed_type other than learnable");
  read_inert_block_keys(r);
  r.inert("timm_model_name", "null", "a timm image tower");
  r.ignore({"attn_pooler_queries", "attn_pooler_heads", "timm_model_pretrained", "timm_pool", "timm_proj",
            "timm_proj_bias", "timm_drop", "timm_drop_path"});
  r.finish();
}

void read_text(Reader r, TextCfg& t) {
  r.get("context_length", t.context_length());
  r.get("vocab_size", t.vocab_size());
  r.get("width", t.width());
  r.get("heads", t.heads());
  r.get("layers", t.layers());
  r.get("mlp_ratio", t.mlp_ratio());
  r.get("ls_init_value", t.ls_init_value());
  r.get("pad_id", t.pad_id());
  r.get("eos_id", t.eos_id());
  r.get("no_causal_mask", t.no_causal_mask());
  r.get_choice("pool_type", t.pool_type(), {"argmax", "eos", "first", "last"});
  r.get("proj_bias", t.proj_bias());
  r.get_choice("proj_type", t.proj_type(), {"linear", "none"});
  r.get_choice("pos_embed_type", t.pos_embed_type(), {"learnable", "sinusoidal"});
  r.inert("embed_cls", "false", "embed_cls (CoCa)");
  r.inert("final_ln_after_pool", "false", "final_ln_after_pool for text (OpenCLIP's CLIP ignores it too)");
  read_inert_block_keys(r);
  r.inert("hf_model_name", "null", "a Hugging Face text tower");
  r.inert("hf_tokenizer_name", "null", "a Hugging Face tokenizer");
  r.ignore({"hf_model_pretrained", "hf_proj_type", "hf_pooler_type", "tokenizer_mode", "tokenizer_kwargs"});
  r.finish();
}

[[noreturn]] void invalid(const ModelConfig& c, const std::string& key, const std::string& msg) {
  throw ConfigError(fmt::format("{}: {}: {}", c.source(), key, msg));
}

}  // namespace

std::string configs_dir() {
  if (const char* env = std::getenv("TORCHCLIP_CONFIGS")) return env;
  return TORCHCLIP_SOURCE_DIR "/configs";
}

std::vector<std::string> model_config_names() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(configs_dir()) / "models", ec)) {
    if (e.path().extension() == ".yaml") names.push_back(e.path().stem().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

ModelConfig parse_model_config(const YAML::Node& node, const std::string& source) {
  ModelConfig c;
  c.source(source);
  Reader r(node, source, "");
  r.get("embed_dim", c.embed_dim());
  r.get("quick_gelu", c.quick_gelu());
  r.get("custom_text", c.custom_text());
  r.get("init_logit_scale", c.init_logit_scale());
  r.get("init_logit_bias", c.init_logit_bias());
  r.get("nonscalar_logit_scale", c.nonscalar_logit_scale());
  read_vision(r.child("vision_cfg"), c.vision_cfg());
  read_text(r.child("text_cfg"), c.text_cfg());
  r.finish();
  validate(c);
  return c;
}

ModelConfig load_model_config(const std::string& path_or_name) {
  std::string path = path_or_name;
  if (!fs::exists(path)) {
    fs::path by_name = fs::path(configs_dir()) / "models" / (path_or_name + ".yaml");
    if (path_or_name.find('/') != std::string::npos || !fs::exists(by_name)) {
      throw ConfigError(fmt::format("model config '{}' is neither a file nor a known name; known names: {}",
                                    path_or_name, fmt::join(model_config_names(), ", ")));
    }
    path = by_name.string();
  }
  return parse_model_config(detail::load_yaml_file(path), path);
}

void validate(const ModelConfig& c) {
  auto positive = [&](const std::string& key, int64_t v) {
    if (v <= 0) invalid(c, key, fmt::format("must be a positive integer, got {}", v));
  };
  positive("embed_dim", c.embed_dim());
  if (!std::isfinite(c.init_logit_scale())) invalid(c, "init_logit_scale", "must be finite");

  const VisionCfg& v = c.vision_cfg();
  if (v.layers().size() != 1 && v.layers().size() != 4) {
    invalid(c, "vision_cfg.layers",
            fmt::format("must be one integer (ViT depth) or four (ResNet stages), got {} values", v.layers().size()));
  }
  for (int64_t l : v.layers()) positive("vision_cfg.layers", l);
  positive("vision_cfg.width", v.width());
  positive("vision_cfg.head_width", v.head_width());
  positive("vision_cfg.image_size", v.image_size());
  if (v.mlp_ratio() <= 0) invalid(c, "vision_cfg.mlp_ratio", "must be positive");
  if (v.patch_dropout() < 0 || v.patch_dropout() >= 1)
    invalid(c, "vision_cfg.patch_dropout", fmt::format("must be in [0, 1), got {}", v.patch_dropout()));
  if (v.is_resnet()) {
    if (v.width() % 2 != 0) invalid(c, "vision_cfg.width", fmt::format("must be even for a ResNet, got {}", v.width()));
    if ((v.width() * 32) % v.head_width() != 0)
      invalid(c, "vision_cfg.head_width",
              fmt::format("must divide width*32 = {} (attention-pool heads), got {}", v.width() * 32, v.head_width()));
    if (v.image_size() % 32 != 0)
      invalid(c, "vision_cfg.image_size", fmt::format("must be a multiple of 32 for a ResNet, got {}", v.image_size()));
  } else {
    positive("vision_cfg.patch_size", v.patch_size());
    if (v.width() % v.head_width() != 0)
      invalid(c, "vision_cfg.head_width",
              fmt::format("must divide vision_cfg.width = {} (heads = width / head_width), got {}", v.width(),
                          v.head_width()));
    if (v.image_size() % v.patch_size() != 0)
      invalid(c, "vision_cfg.image_size",
              fmt::format("must be a multiple of patch_size {}, got {}", v.patch_size(), v.image_size()));
  }

  const TextCfg& t = c.text_cfg();
  positive("text_cfg.context_length", t.context_length());
  positive("text_cfg.vocab_size", t.vocab_size());
  positive("text_cfg.width", t.width());
  positive("text_cfg.heads", t.heads());
  positive("text_cfg.layers", t.layers());
  if (t.mlp_ratio() <= 0) invalid(c, "text_cfg.mlp_ratio", "must be positive");
  if (t.width() % t.heads() != 0)
    invalid(c, "text_cfg.heads", fmt::format("must divide text_cfg.width = {}, got {}", t.width(), t.heads()));
  if (t.pad_id() < 0 || t.pad_id() >= t.vocab_size())
    invalid(c, "text_cfg.pad_id", fmt::format("must be in [0, vocab_size = {}), got {}", t.vocab_size(), t.pad_id()));
  if (t.pool_type() == "eos" && (t.eos_id() < 0 || t.eos_id() >= t.vocab_size()))
    invalid(c, "text_cfg.eos_id", fmt::format("must be in [0, vocab_size = {}), got {}", t.vocab_size(), t.eos_id()));
  if (t.proj_type() == "none" && t.width() != c.embed_dim())
    invalid(c, "text_cfg.proj_type",
            fmt::format("'none' needs text_cfg.width ({}) == embed_dim ({})", t.width(), c.embed_dim()));
  if (t.pos_embed_type() == "sinusoidal" && t.width() % 2 != 0)
    invalid(c, "text_cfg.pos_embed_type", fmt::format("'sinusoidal' needs an even width, got {}", t.width()));
}

std::string to_yaml(const ModelConfig& c) {
  YAML::Emitter e;
  auto put = [&](const char* key, const auto& value) {
    e << YAML::Key << key << YAML::Value;
    using T = std::decay_t<decltype(value)>;
    if constexpr (std::is_same_v<T, std::optional<double>>) {
      if (value) e << *value; else e << YAML::Null;
    } else {
      e << value;
    }
  };
  const VisionCfg& v = c.vision_cfg();
  const TextCfg& t = c.text_cfg();
  e << YAML::BeginMap;
  put("embed_dim", c.embed_dim());
  put("quick_gelu", c.quick_gelu());
  put("custom_text", c.custom_text());
  put("init_logit_scale", c.init_logit_scale());
  put("init_logit_bias", c.init_logit_bias());
  put("nonscalar_logit_scale", c.nonscalar_logit_scale());
  e << YAML::Key << "vision_cfg" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "layers" << YAML::Value;
  if (v.is_resnet()) e << YAML::Flow << v.layers(); else e << v.layers()[0];
  put("width", v.width());
  put("head_width", v.head_width());
  put("mlp_ratio", v.mlp_ratio());
  put("patch_size", v.patch_size());
  put("image_size", v.image_size());
  put("ls_init_value", v.ls_init_value());
  put("patch_dropout", v.patch_dropout());
  put("no_ln_pre", v.no_ln_pre());
  put("pool_type", v.pool_type());
  put("final_ln_after_pool", v.final_ln_after_pool());
  e << YAML::EndMap;
  e << YAML::Key << "text_cfg" << YAML::Value << YAML::BeginMap;
  put("context_length", t.context_length());
  put("vocab_size", t.vocab_size());
  put("width", t.width());
  put("heads", t.heads());
  put("layers", t.layers());
  put("mlp_ratio", t.mlp_ratio());
  put("ls_init_value", t.ls_init_value());
  put("pad_id", t.pad_id());
  put("eos_id", t.eos_id());
  put("no_causal_mask", t.no_causal_mask());
  put("pool_type", t.pool_type());
  put("proj_bias", t.proj_bias());
  put("proj_type", t.proj_type());
  put("pos_embed_type", t.pos_embed_type());
  e << YAML::EndMap << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

// ---- losses ---------------------------------------------------------------------------------

const std::vector<std::string>& loss_names() {
  static const std::vector<std::string> names = {"clip", "infonce", "contrastive", "triplet", "siglip"};
  return names;
}

LossConfig parse_loss_config(const YAML::Node& node, const std::string& source) {
  LossConfig c;
  Reader r(node, source, "loss");
  r.get_choice("name", c.name(), loss_names());
  const std::string& name = c.name();
  DistributedLossOptions& d = c.distributed();
  r.get("local_loss", d.local_loss());
  r.get("gather_with_grad", d.gather_with_grad());
  if (name == "clip") {
    c.options(ClipLossOptions{});
  } else if (name == "infonce") {
    InfoNCELossOptions o;
    r.get_choice("direction", o.direction(), {"both", "image_to_text", "text_to_image"});
    r.get("temperature", o.temperature());
    if (o.temperature() && !(*o.temperature() > 0))
      r.fail(r.node()["temperature"], fmt::format("must be > 0, got {}", *o.temperature()), "temperature");
    c.options(o);
  } else if (name == "contrastive" || name == "triplet") {
    double margin = name == "contrastive" ? ContrastiveLossOptions{}.margin() : TripletLossOptions{}.margin();
    r.get("margin", margin);
    if (!(margin >= 0)) r.fail(r.node()["margin"], fmt::format("must be >= 0, got {}", margin), "margin");
    std::string distance = "cosine";
    r.get_choice("distance", distance, {"cosine", "euclidean"});
    if (name == "contrastive") {
      c.options(ContrastiveLossOptions{}.margin(margin).distance(distance));
    } else {
      std::string mining = TripletLossOptions{}.mining();
      r.get_choice("mining", mining, {"hardest", "semi-hard", "all"});
      c.options(TripletLossOptions{}.margin(margin).distance(distance).mining(mining));
    }
  } else {
    c.options(SigLipLossOptions{});
  }
  r.finish();
  return c;
}

}  // namespace torchclip
