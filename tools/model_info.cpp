#include "config/emit.h"
#include "model/clip.h"
#include "subcommands.h"
#include "util/args.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace torchclip::tools {

int model_info_main(const Argv& argv) {
  if (argv.empty() || argv[0] != "info") throw UsageError("model needs a verb: model info");
  Args args(Argv(argv.begin() + 1, argv.end()));
  const std::string name = args.require("config");
  const bool json = args.flag("json"), with_state = args.flag("state-dict");
  args.finish();

  CLIP model(load_model_config(name));
  const int64_t total = parameter_count(*model);
  const int64_t visual = parameter_count(*model->named_children()["visual"]);
  const int64_t text = parameter_count(*model->text);
  auto sd = state_dict(*model);
  if (json) {
    std::vector<std::string> entries;
    if (with_state) {
      for (const auto& [k, v] : sd) entries.push_back(fmt::format("\"{}\": [{}]", k, fmt::join(v.sizes(), ", ")));
    }
    fmt::print("{{\"config\": \"{}\", \"parameters\": {}, \"visual_parameters\": {}, \"text_parameters\": {}, "
               "\"image_flops\": {}, \"text_flops\": {}, \"state_dict_entries\": {}{}}}\n",
               name, total, visual, text, model->image_flops(), model->text_flops(), sd.size(),
               with_state ? fmt::format(", \"state_dict\": {{{}}}", fmt::join(entries, ", ")) : "");
    return 0;
  }
  fmt::print("{}\n", to_yaml(model->config));
  fmt::print("parameters: {} (visual {}, text {}, other {})\n", total, visual, text, total - visual - text);
  fmt::print("forward GFLOPs: image {:.3f}, text {:.3f}\n", model->image_flops() / 1e9, model->text_flops() / 1e9);
  if (with_state) {
    for (const auto& [k, v] : sd) fmt::print("{} {}\n", k, fmt::join(v.sizes(), "x"));
  }
  return 0;
}

}  // namespace torchclip::tools
