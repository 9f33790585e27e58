#include "model/model_dir.h"

#include "config/emit.h"
#include "io/fsutil.h"
#include "io/safetensors.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>

namespace torchclip {
namespace fs = std::filesystem;

void save_model_dir(const std::string& dir, CLIP& model, const std::string& tokenizer_spec) {
  save_safetensors((fs::path(dir) / "model.safetensors").string(), state_dict(*model),
                   {{"format", "pt"}, {"producer", "torchclip"}});
  write_file_atomic((fs::path(dir) / "config.yaml").string(), to_yaml(model->config));
  const TokenizerFile tok = resolve_tokenizer(tokenizer_spec);
  const std::string name = fs::path(tok.path).filename().string();
  write_file_atomic((fs::path(dir) / name).string(), read_file(tok.path));
  write_file_atomic((fs::path(dir) / "tokenizer.yaml").string(), fmt::format("kind: {}\nfile: {}\n", tok.kind, name));
}

void load_state_dict(CLIP& model, const std::map<std::string, at::Tensor>& weights, const std::string& source) {
  auto ours = state_dict(*model);
  std::vector<std::string> missing, unexpected, misshaped, mistyped, nonfinite;
  for (const auto& [k, v] : ours) {
    auto it = weights.find(k);
    if (it == weights.end()) {
      missing.push_back(k);
    } else if (it->second.sizes() != v.sizes()) {
      misshaped.push_back(fmt::format("{} (file {}, model {})", k, it->second.sizes(), v.sizes()));
    } else if (at::isFloatingType(v.scalar_type()) != at::isFloatingType(it->second.scalar_type())) {
      // Integers copied into float weights (a header that says I32 over float bytes) would load
      // as garbage without a word.
      mistyped.push_back(fmt::format("{} (file {}, model {})", k, c10::toString(it->second.scalar_type()),
                                     c10::toString(v.scalar_type())));
    } else if (at::isFloatingType(v.scalar_type()) && it->second.numel() > 0 &&
               !at::isfinite(it->second).all().item<bool>()) {
      // NaN or Inf weights give NaN probabilities and scores that outrank every real one.
      nonfinite.push_back(k);
    }
  }
  for (const auto& [k, v] : weights)
    if (!ours.count(k)) unexpected.push_back(k);
  if (!missing.empty() || !unexpected.empty() || !misshaped.empty() || !mistyped.empty() || !nonfinite.empty()) {
    auto list = [](const std::vector<std::string>& v) {
      return v.empty() ? std::string("none") : fmt::format("{}", fmt::join(v.begin(), v.begin() + std::min<size_t>(v.size(), 8), ", ")) +
                                                   (v.size() > 8 ? fmt::format(" and {} more", v.size() - 8) : "");
    };
    throw std::runtime_error(fmt::format("{}: weights do not fit the model config: missing {}; unexpected {}; mis-shaped {}; "
                                         "wrong dtype {}; non-finite values in {}",
                                         source, list(missing), list(unexpected), list(misshaped), list(mistyped),
                                         list(nonfinite)));
  }
  torch::NoGradGuard no_grad;
  for (auto& [k, v] : ours) v.copy_(weights.at(k));
}

LoadedModel load_model_dir(const std::string& dir, const c10::Device& device) {
  LoadedModel m;
  m.dir = dir;
  const fs::path d(dir);
  if (!fs::is_directory(d)) throw std::runtime_error(fmt::format("{}: not a model folder (no such directory)", dir));
  for (const char* f : {"config.yaml", "model.safetensors", "tokenizer.yaml"})
    if (const std::string problem = file_problem((d / f).string()); !problem.empty())
      throw std::runtime_error(fmt::format("{}: not a model folder: {} {} (a model folder holds model.safetensors, "
                                           "config.yaml and tokenizer.yaml, as torchclip train and convert write them)",
                                           dir, f, problem));
  m.config = load_model_config((d / "config.yaml").string());
  m.model = CLIP(m.config);
  const std::string weights_path = (d / "model.safetensors").string();
  const std::string weights = read_file(weights_path);
  load_state_dict(m.model, parse_safetensors(weights, weights_path, at::kFloat).tensors, weights_path);
  YAML::Node tok;
  try {
    tok = YAML::LoadFile((d / "tokenizer.yaml").string());
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(fmt::format("{}: cannot read tokenizer.yaml: {}", dir, e.what()));
  }
  m.tokenizer_spec = (d / tok["file"].as<std::string>("")).string();
  m.tokenizer = load_tokenizer(m.tokenizer_spec);
  // Everything that changes an embedding: the weights, the architecture (quick_gelu, pooling,
  // ... in the canonical emission of the config, so formatting does not count) and the tokenizer.
  m.fingerprint = fmt::format("crc32:{:08x}:{}:{:08x}:{:08x}", crc32_of(weights), weights.size(),
                              crc32_of(to_yaml(m.config)), crc32_of(read_file(m.tokenizer_spec)));
  m.model->to(device);
  m.model->eval();
  return m;
}

}  // namespace torchclip
