#include "train/checkpoint.h"

#include "io/fsutil.h"
#include "io/safetensors.h"
#include "model/model_dir.h"
#include "optim/fused_adamw.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/optim/adamw.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <sstream>

namespace torchclip {
namespace fs = std::filesystem;

namespace {

constexpr const char* kManifestMagic = "torchclip-checkpoint-v1";

std::map<std::string, at::Tensor> named_params(CLIP& model) {
  std::map<std::string, at::Tensor> out;
  for (const auto& p : model->named_parameters()) out[p.key()] = p.value();
  return out;
}

/// Everything a checkpoint folder holds, written into `tmp`; the manifest goes last.
void write_checkpoint_files(const fs::path& tmp, CLIP& model, torch::optim::Optimizer& optimizer, const TrainerState& state,
                            const std::string& tokenizer_spec, const std::string& train_config_yaml) {
  save_model_dir(tmp.string(), model, tokenizer_spec);
  write_file_atomic((tmp / "train_config.yaml").string(), train_config_yaml);

  // Optimizer moments by parameter name, the CPU RNG, and the loop position.
  if (auto* fused = dynamic_cast<FusedAdamW*>(&optimizer)) fused->sync_state();  // its step counts live on the device
  std::map<std::string, at::Tensor> st;
  auto& opt_state = optimizer.state();
  for (const auto& [pname, p] : named_params(model)) {
    auto it = opt_state.find(p.unsafeGetTensorImpl());
    if (it == opt_state.end()) continue;
    auto& s = static_cast<torch::optim::AdamWParamState&>(*it->second);
    st["exp_avg/" + pname] = s.exp_avg().cpu();
    st["exp_avg_sq/" + pname] = s.exp_avg_sq().cpu();
    st["step/" + pname] = at::scalar_tensor(s.step(), at::kLong);
  }
  st["rng/cpu"] = at::detail::getDefaultCPUGenerator().get_state();
  // Each CUDA device's generator too (dropout and patch dropout draw from it on a GPU).
  if (at::hasCUDA())
    for (size_t d = 0; d < at::getNumGPUs(); ++d)
      st["rng/cuda:" + std::to_string(d)] =
          at::globalContext().defaultGenerator(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(d))).get_state();
  TORCH_CHECK(!state.loader_states.empty(), "save_checkpoint: no loader state");
  std::map<std::string, std::string> meta = {
      {"step", std::to_string(state.step)}, {"epoch", std::to_string(state.epoch)},
      {"world_size", std::to_string(state.loader_states.size())}, {"loader", state.loader_states[0]},
      {"nonfinite_in_row", std::to_string(state.nonfinite_in_row)}, {"nonfinite_total", std::to_string(state.nonfinite_total)},
      {"samples_seen", std::to_string(state.samples_seen)}, {"train_seconds", fmt::format("{:.17g}", state.train_seconds)}};
  for (size_t r = 1; r < state.loader_states.size(); ++r) meta["loader/" + std::to_string(r)] = state.loader_states[r];
  save_safetensors((tmp / "trainer.safetensors").string(), st, meta);
  // The manifest goes last: a folder without a valid one is never resumed from.
  std::string manifest = std::string(kManifestMagic) + "\n";
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(tmp)) files.push_back(e.path().filename().string());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    const std::string data = read_file((tmp / f).string());
    manifest += fmt::format("{} {} {:08x}\n", f, data.size(), crc32_of(data));
  }
  write_file_atomic((tmp / "MANIFEST").string(), manifest);
}

}  // namespace

std::string save_checkpoint(const std::string& root, CLIP& model, torch::optim::Optimizer& optimizer,
                            const TrainerState& state, const std::string& tokenizer_spec,
                            const std::string& train_config_yaml, int64_t keep) {
  const std::string name = fmt::format("step-{:08d}", state.step);
  const fs::path final_dir = fs::path(root) / name, tmp = fs::path(root) / (name + ".tmp");
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  try {
    write_checkpoint_files(tmp, model, optimizer, state, tokenizer_spec, train_config_yaml);
  } catch (...) {
    // A full disk or a failed write: leave no half-written folder taking the space a later
    // checkpoint needs (the older checkpoints stay as they were).
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  fsync_dir(root);
  // Keep the newest `keep`.
  std::vector<std::string> all;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && n.rfind("step-", 0) == 0 && !is_temp_name(n)) all.push_back(n);
  }
  std::sort(all.begin(), all.end());
  for (size_t i = 0; i + keep < all.size(); ++i) fs::remove_all(fs::path(root) / all[i]);
  return final_dir.string();
}

std::string validate_checkpoint(const std::string& dir) {
  std::string manifest;
  try {
    manifest = read_file((fs::path(dir) / "MANIFEST").string());
  } catch (const std::exception&) {
    return "no MANIFEST (the write did not finish)";
  }
  std::istringstream in(manifest);
  std::string magic;
  std::getline(in, magic);
  if (magic != kManifestMagic) return fmt::format("MANIFEST does not start with '{}'", kManifestMagic);
  int files = 0;
  for (std::string file; in >> file;) {
    uint64_t size = 0;
    std::string crc;
    in >> size >> crc;
    std::string data;
    try {
      data = read_file((fs::path(dir) / file).string());
    } catch (const std::exception&) {
      return fmt::format("{} is missing", file);
    }
    if (data.size() != size) return fmt::format("{} has {} bytes, the manifest says {}", file, data.size(), size);
    if (fmt::format("{:08x}", crc32_of(data)) != crc) return fmt::format("{} fails its CRC-32 check", file);
    ++files;
  }
  return files > 0 ? "" : "MANIFEST lists no files";
}

std::optional<std::string> latest_checkpoint(const std::string& root) {
  std::vector<std::string> all;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && n.rfind("step-", 0) == 0 && !is_temp_name(n)) all.push_back(e.path().string());
  }
  std::sort(all.rbegin(), all.rend());
  for (const auto& d : all) {
    const std::string problem = validate_checkpoint(d);
    if (problem.empty()) return d;
    std::cerr << fmt::format("checkpoint {} is not usable: {}; skipped\n", d, problem);
  }
  return std::nullopt;
}

TrainerState load_checkpoint(const std::string& dir, CLIP& model, torch::optim::Optimizer& optimizer,
                             const std::function<bool(const at::Tensor&)>& keep_state) {
  const std::string problem = validate_checkpoint(dir);
  if (!problem.empty()) throw std::runtime_error(fmt::format("{}: {}", dir, problem));
  load_state_dict(model, load_safetensors((fs::path(dir) / "model.safetensors").string()).tensors,
                  (fs::path(dir) / "model.safetensors").string());
  auto st = load_safetensors((fs::path(dir) / "trainer.safetensors").string());
  auto& opt_state = optimizer.state();
  for (const auto& [pname, p] : named_params(model)) {
    auto it = st.tensors.find("exp_avg/" + pname);
    if (it == st.tensors.end() || (keep_state && !keep_state(p))) continue;
    auto s = std::make_unique<torch::optim::AdamWParamState>();
    s->exp_avg(it->second.to(p.device(), /*non_blocking=*/false, /*copy=*/true));  // moments live beside their parameter
    s->exp_avg_sq(st.tensors.at("exp_avg_sq/" + pname).to(p.device(), /*non_blocking=*/false, /*copy=*/true));
    s->step(st.tensors.at("step/" + pname).item<int64_t>());
    opt_state[p.unsafeGetTensorImpl()] = std::move(s);
  }
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  gen.set_state(st.tensors.at("rng/cpu"));
  // CUDA generators saved by a GPU run are restored when this process has that device; a
  // checkpoint written on a GPU resumes on a CPU with the CPU stream alone.
  if (at::hasCUDA())
    for (size_t d = 0; d < at::getNumGPUs(); ++d) {
      auto saved = st.tensors.find("rng/cuda:" + std::to_string(d));
      if (saved == st.tensors.end()) continue;
      at::Generator cuda = at::globalContext().defaultGenerator(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(d)));
      cuda.set_state(saved->second);
    }
  TrainerState s;
  const std::string trainer_file = (fs::path(dir) / "trainer.safetensors").string();
  // A damaged checkpoint is a run-time error naming the file and the key (not "map::at" or a
  // std::stoll that would read as a usage error).
  auto meta = [&](const std::string& k) {
    auto it = st.metadata.find(k);
    if (it == st.metadata.end()) throw std::runtime_error(fmt::format("{}: no '{}' in its metadata", trainer_file, k));
    return it->second;
  };
  auto number = [&](const std::string& k) {
    const std::string v = meta(k);
    try {
      size_t used = 0;
      const double x = std::stod(v, &used);
      if (used == v.size()) return x;
    } catch (const std::exception&) {
    }
    throw std::runtime_error(fmt::format("{}: metadata '{}' is '{}', not a number", trainer_file, k, v));
  };
  auto count = [&](const std::string& k) { return static_cast<int64_t>(number(k)); };
  s.step = count("step");
  s.epoch = count("epoch");
  // Checkpoints from before distributed training have no world_size: one rank.
  const int64_t world = st.metadata.count("world_size") ? count("world_size") : 1;
  if (world < 1 || world > 65536) throw std::runtime_error(fmt::format("{}: world_size {} is not a rank count", trainer_file, world));
  s.loader_states.push_back(meta("loader"));
  for (int64_t r = 1; r < world; ++r) s.loader_states.push_back(meta("loader/" + std::to_string(r)));
  s.nonfinite_in_row = count("nonfinite_in_row");
  s.nonfinite_total = count("nonfinite_total");
  s.samples_seen = count("samples_seen");
  s.train_seconds = number("train_seconds");
  return s;
}

}  // namespace torchclip
