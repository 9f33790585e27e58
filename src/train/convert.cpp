#include "train/convert.h"

#include "io/safetensors.h"
#include "train/checkpoint.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <array>
#include <cstdio>
#include <filesystem>

namespace torchclip {
namespace fs = std::filesystem;

namespace {

std::string installed_openclip_configs() {
  FILE* p = popen("python3 -c 'import open_clip,os;print(os.path.dirname(open_clip.__file__))' 2>/dev/null", "r");
  if (!p) return "";
  std::string out;
  std::array<char, 512> buf{};
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out.empty() ? "" : out + "/model_configs";
}

}  // namespace

ModelConfig openclip_model_config(const std::string& name) {
  if (fs::is_regular_file(name)) {
    try {
      return parse_model_config(YAML::LoadFile(name), name);  // JSON is YAML
    } catch (const YAML::Exception& e) {
      throw ConfigError(fmt::format("{}: cannot parse: {}", name, e.what()));
    }
  }
  const auto ours = model_config_names();
  if (std::find(ours.begin(), ours.end(), name) != ours.end()) return load_model_config(name);
  const std::string dir = installed_openclip_configs();
  const fs::path json = fs::path(dir) / (name + ".json");
  if (!dir.empty() && fs::is_regular_file(json)) return parse_model_config(YAML::LoadFile(json.string()), json.string());
  throw ConfigError(fmt::format("open_clip config '{}' is not a file, not in configs/models/, and not in {}", name,
                                dir.empty() ? "an installed open_clip (python3 cannot import open_clip)" : dir));
}

void convert_openclip(const ModelConfig& config_in, const std::string& weights, const std::string& out) {
  auto file = load_safetensors(weights, at::kFloat);
  ModelConfig config = config_in;
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

}  // namespace torchclip
