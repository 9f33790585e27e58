#include "interop/openclip.h"

#include "io/fsutil.h"
#include "io/safetensors.h"
#include "model/model_dir.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

namespace torchclip {
namespace fs = std::filesystem;

ModelConfig openclip_model_config(const std::string& name) {
  // A path (open_clip's model_configs/NAME.json: JSON is YAML) or one of configs/models/.
  const auto ours = model_config_names();
  if (fs::is_regular_file(name) || std::find(ours.begin(), ours.end(), name) != ours.end()) return load_model_config(name);
  throw ConfigError(fmt::format(
      "open_clip config '{}' is neither a file nor one of configs/models/ ({}); for another open_clip model pass the "
      "path of its model_configs/{}.json",
      name, fmt::join(ours, ", "), name));
}

at::Tensor resize_pos_embed(const at::Tensor& pos, int64_t n) {
  const int64_t W = pos.size(1), g = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(pos.size(0) - 1))));
  TORCH_CHECK(g * g + 1 == pos.size(0), "positional_embedding has ", pos.size(0), " rows, not 1 + a square grid");
  if (g == n) return pos;
  auto grid = pos.slice(0, 1).reshape({1, g, g, W}).permute({0, 3, 1, 2});             // [1, W, g, g]
  auto resized = at::_upsample_bicubic2d_aa(grid, {n, n}, /*align_corners=*/false);     // [1, W, n, n]
  return at::cat({pos.slice(0, 0, 1), resized.permute({0, 2, 3, 1}).reshape({n * n, W})});  // [1 + n*n, W]
}

void convert_openclip(const ModelConfig& config_in, const std::string& weights, const std::string& out, int64_t image_size) {
  auto file = load_safetensors(weights, at::kFloat);
  ModelConfig config = config_in;
  if (image_size > 0 && image_size != config.vision_cfg().image_size()) {
    if (config.vision_cfg().is_resnet())
      throw std::runtime_error("--image-size: resizing is supported for ViT image towers only (as in open_clip)");
    config.vision_cfg().image_size(image_size);
    validate(config);
    auto it = file.tensors.find("visual.positional_embedding");
    if (it != file.tensors.end()) it->second = resize_pos_embed(it->second, config.vision_cfg().grid_size());
  }
  auto scale = file.tensors.find("logit_scale");
  if (scale != file.tensors.end()) {
    config.nonscalar_logit_scale(scale->second.dim() == 1);
    config.init_logit_scale(scale->second.reshape(-1)[0].item<double>());
  }
  auto bias = file.tensors.find("logit_bias");
  if (bias != file.tensors.end()) config.init_logit_bias(bias->second.reshape(-1)[0].item<double>());
  CLIP model(config);
  // open_clip's state dict may carry non-persistent leftovers of older versions.
  file.tensors.erase("attn_mask");
  file.tensors.erase("visual.attn_mask");
  load_state_dict(model, file.tensors, weights);
  fs::create_directories(out);
  save_model_dir(out, model, "clip-bpe");
}

std::string openclip_config_json(const ModelConfig& c) {
  const VisionCfg& v = c.vision_cfg();
  const TextCfg& t = c.text_cfg();
  if (t.pos_embed_type() != PosEmbed::kLearnable)
    throw std::runtime_error("text_cfg.pos_embed_type 'sinusoidal' is a torchclip extension open_clip cannot load");
  auto opt = [](const std::optional<double>& x) { return x ? fmt::format("{}", *x) : std::string("null"); };
  std::string layers = v.is_resnet() ? fmt::format("[{}]", fmt::join(v.layers(), ", ")) : std::to_string(v.layers()[0]);
  std::string out = fmt::format("{{\n  \"embed_dim\": {},\n  \"quick_gelu\": {},\n", c.embed_dim(), c.quick_gelu());
  if (c.init_logit_bias()) out += fmt::format("  \"init_logit_bias\": {},\n", *c.init_logit_bias());
  if (c.custom_text()) out += "  \"custom_text\": true,\n";
  if (c.nonscalar_logit_scale()) out += "  \"nonscalar_logit_scale\": true,\n";
  out += fmt::format(
      "  \"vision_cfg\": {{\"layers\": {}, \"width\": {}, \"head_width\": {}, \"mlp_ratio\": {}, \"patch_size\": {}, "
      "\"image_size\": {}, \"ls_init_value\": {}, \"patch_dropout\": {}, \"no_ln_pre\": {}, \"pool_type\": \"{}\", "
      "\"final_ln_after_pool\": {}}},\n",
      layers, v.width(), v.head_width(), v.mlp_ratio(), v.is_resnet() ? std::string("null") : std::to_string(v.patch_size()),
      v.image_size(), opt(v.ls_init_value()), v.patch_dropout(), v.no_ln_pre(), enum_name(v.pool_type()), v.final_ln_after_pool());
  out += fmt::format(
      "  \"text_cfg\": {{\"context_length\": {}, \"vocab_size\": {}, \"width\": {}, \"heads\": {}, \"layers\": {}, "
      "\"mlp_ratio\": {}, \"ls_init_value\": {}, \"pad_id\": {}, \"eos_id\": {}, \"no_causal_mask\": {}, "
      "\"pool_type\": \"{}\", \"proj_bias\": {}, \"proj_type\": \"{}\"}}\n}}\n",
      t.context_length(), t.vocab_size(), t.width(), t.heads(), t.layers(), t.mlp_ratio(), opt(t.ls_init_value()),
      t.pad_id(), t.eos_id(), t.no_causal_mask(), enum_name(t.pool_type()), t.proj_bias(), enum_name(t.proj_type()));
  return out;
}

void export_openclip(const std::string& model_dir, const std::string& prefix) {
  auto m = load_model_dir(model_dir);
  const std::string json = openclip_config_json(m.config);
  save_safetensors(prefix + ".safetensors", state_dict(*m.model), {{"format", "pt"}, {"producer", "torchclip"}});
  write_file_atomic(prefix + ".json", json);
}

}  // namespace torchclip
