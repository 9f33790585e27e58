// Model configs: read through the schema (config/schema.h), then checked across fields.
#include "config/model_config.h"

#include "config/reader.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

namespace torchclip {
namespace {

namespace fs = std::filesystem;
using detail::Reader;

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
  detail::ReadVisitor v(r);
  visit_fields(v, c);
  r.finish();
  validate(c);
  return c;
}

ModelConfig load_model_config(const std::string& path_or_name) {
  std::string path = path_or_name;
  std::error_code ec;  // the non-throwing overloads: a name past the file-name limit is "not found", not an OS error
  if (!fs::exists(path, ec)) {
    fs::path by_name = fs::path(configs_dir()) / "models" / (path_or_name + ".yaml");
    if (path_or_name.find('/') != std::string::npos || !fs::exists(by_name, ec)) {
      throw ConfigError(fmt::format("model config '{}' is neither a file nor a known name; known names: {}",
                                    path_or_name, fmt::join(model_config_names(), ", ")));
    }
    path = by_name.string();
  }
  return parse_model_config(detail::load_yaml_file(path), path);
}

void validate(const ModelConfig& c) {
  // Sizes far past any real model would only fail as a huge allocation (or overflow): bounded.
  auto positive = [&](const std::string& key, int64_t v, int64_t most = 65536) {
    if (v <= 0 || v > most) detail::invalid(c.source(), key, fmt::format("must be an integer in [1, {}], got {}", most, v));
  };
  positive("embed_dim", c.embed_dim());
  if (!std::isfinite(c.init_logit_scale())) detail::invalid(c.source(), "init_logit_scale", "must be finite");
  if (c.init_logit_bias() && !std::isfinite(*c.init_logit_bias()))
    detail::invalid(c.source(), "init_logit_bias", "must be finite");

  const VisionCfg& v = c.vision_cfg();
  if (v.layers().size() != 1 && v.layers().size() != 4) {
    detail::invalid(c.source(), "vision_cfg.layers",
            fmt::format("must be one integer (ViT depth) or four (ResNet stages), got {} values", v.layers().size()));
  }
  for (int64_t l : v.layers()) positive("vision_cfg.layers", l, 1024);
  positive("vision_cfg.width", v.width());
  positive("vision_cfg.head_width", v.head_width());
  positive("vision_cfg.image_size", v.image_size());
  if (!(v.mlp_ratio() > 0 && v.mlp_ratio() <= 64)) detail::invalid(c.source(), "vision_cfg.mlp_ratio", "must be in (0, 64]");
  if (!(v.patch_dropout() >= 0 && v.patch_dropout() < 1))
    detail::invalid(c.source(), "vision_cfg.patch_dropout", fmt::format("must be in [0, 1), got {}", v.patch_dropout()));
  if (v.is_resnet()) {
    if (v.width() % 2 != 0) detail::invalid(c.source(), "vision_cfg.width", fmt::format("must be even for a ResNet, got {}", v.width()));
    if ((v.width() * 32) % v.head_width() != 0)
      detail::invalid(c.source(), "vision_cfg.head_width",
              fmt::format("must divide width*32 = {} (attention-pool heads), got {}", v.width() * 32, v.head_width()));
    if (v.image_size() % 32 != 0)
      detail::invalid(c.source(), "vision_cfg.image_size", fmt::format("must be a multiple of 32 for a ResNet, got {}", v.image_size()));
  } else {
    positive("vision_cfg.patch_size", v.patch_size());
    if (v.width() % v.head_width() != 0)
      detail::invalid(c.source(), "vision_cfg.head_width",
              fmt::format("must divide vision_cfg.width = {} (heads = width / head_width), got {}", v.width(),
                          v.head_width()));
    if (v.image_size() % v.patch_size() != 0)
      detail::invalid(c.source(), "vision_cfg.image_size",
              fmt::format("must be a multiple of patch_size {}, got {}", v.patch_size(), v.image_size()));
  }

  for (const auto& [key, ls] : {std::pair{"vision_cfg.ls_init_value", v.ls_init_value()},
                                std::pair{"text_cfg.ls_init_value", c.text_cfg().ls_init_value()}})
    if (ls && !std::isfinite(*ls)) detail::invalid(c.source(), key, "must be finite");

  const TextCfg& t = c.text_cfg();
  positive("text_cfg.context_length", t.context_length());
  positive("text_cfg.vocab_size", t.vocab_size(), 1 << 24);
  positive("text_cfg.width", t.width());
  positive("text_cfg.heads", t.heads());
  positive("text_cfg.layers", t.layers(), 1024);
  if (!(t.mlp_ratio() > 0 && t.mlp_ratio() <= 64)) detail::invalid(c.source(), "text_cfg.mlp_ratio", "must be in (0, 64]");
  if (t.width() % t.heads() != 0)
    detail::invalid(c.source(), "text_cfg.heads", fmt::format("must divide text_cfg.width = {}, got {}", t.width(), t.heads()));
  if (t.pad_id() < 0 || t.pad_id() >= t.vocab_size())
    detail::invalid(c.source(), "text_cfg.pad_id", fmt::format("must be in [0, vocab_size = {}), got {}", t.vocab_size(), t.pad_id()));
  if (t.pool_type() == TextPool::kEos && (t.eos_id() < 0 || t.eos_id() >= t.vocab_size()))
    detail::invalid(c.source(), "text_cfg.eos_id", fmt::format("must be in [0, vocab_size = {}), got {}", t.vocab_size(), t.eos_id()));
  if (t.proj_type() == TextProj::kNone && t.width() != c.embed_dim())
    detail::invalid(c.source(), "text_cfg.proj_type",
            fmt::format("'none' needs text_cfg.width ({}) == embed_dim ({})", t.width(), c.embed_dim()));
  if (t.pos_embed_type() == PosEmbed::kSinusoidal && t.width() % 2 != 0)
    detail::invalid(c.source(), "text_cfg.pos_embed_type", fmt::format("'sinusoidal' needs an even width, got {}", t.width()));
}

}  // namespace torchclip
