// libFuzzer harness: YAML configs (src/config/). The input is read as a model config and as a
// training config; lines "#set KEY=VALUE" (YAML comments) are also applied as command-line
// overrides. A bad config must be a ConfigError naming the file, line and key. A config that
// reads must emit (config/emit.h) YAML that reads back to the same config, as the copy saved
// beside every checkpoint is read on resume.
#include "config/emit.h"
#include "config/model_config.h"
#include "config/train_config.h"
#include "fuzz_support.h"

#include <cstdlib>
#include <string>
#include <vector>

using torchclip::ConfigError;

namespace {

/// The "#set KEY=VALUE" lines of `text`.
std::vector<std::string> overrides(const std::string& text) {
  std::vector<std::string> out;
  for (size_t pos = 0; pos < text.size();) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    if (text.compare(pos, 5, "#set ") == 0) out.push_back(text.substr(pos + 5, nl - pos - 5));
    pos = nl + 1;
  }
  return out;
}

/// The emitted YAML without its leading comment (which names the file it was read from).
template <typename Config>
std::string emitted(const Config& cfg) {
  std::string yaml = torchclip::to_yaml(cfg);
  if (yaml.rfind('#', 0) == 0) yaml.erase(0, yaml.find('\n') + 1);
  return yaml;
}

template <typename Config, typename Load>
void read_back(const Config& cfg, const Load& load) {
  const std::string yaml = emitted(cfg);
  const std::string path = torchclip::fuzz::temp_file(reinterpret_cast<const uint8_t*>(yaml.data()), yaml.size(),
                                                      ".emitted.yaml");
  std::string again;
  try {
    again = emitted(load(path));
  } catch (const std::exception& e) {
    torchclip::fuzz::violated(std::string("the emitted config does not read back: ") + e.what() + "\n" + yaml);
  }
  if (again != yaml) torchclip::fuzz::violated("the emitted config reads back different:\n" + yaml + "\n---\n" + again);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Model names resolve in the source tree's configs/models.
  static const int configured = setenv("TORCHCLIP_CONFIGS", TORCHCLIP_SOURCE_DIR "/configs", 1);
  (void)configured;
  const std::string path = torchclip::fuzz::temp_file(data, size, ".yaml");
  try {
    read_back(torchclip::load_model_config(path), [](const std::string& p) { return torchclip::load_model_config(p); });
  } catch (const ConfigError&) {
  } catch (const std::exception& e) {
    torchclip::fuzz::undocumented(e);
  }
  const std::vector<std::string> sets = overrides(std::string(reinterpret_cast<const char*>(data), size));
  try {
    read_back(torchclip::load_train_config(path, sets), [](const std::string& p) { return torchclip::load_train_config(p); });
  } catch (const ConfigError&) {
  } catch (const std::exception& e) {
    torchclip::fuzz::undocumented(e);
  }
  return 0;
}
