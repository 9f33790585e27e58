#include "subcommands.h"
#include "interop/openclip.h"
#include "io/fsutil.h"
#include "util/args.h"

#include <fmt/format.h>

#include <filesystem>

namespace torchclip::tools {

int convert_main(const Argv& argv) {
  Args args(argv);
  const std::string config = args.require("openclip-config"), weights = args.require("weights"), out = args.require("out");
  // Not given: the config's own image size. Given, it must be one (0 is not "keep it").
  const int64_t image_size = args.get("image-size", "").empty() ? 0 : args.get_int("image-size", 0, 1, 4096);
  args.finish();
  if (const std::string problem = file_problem(weights); !problem.empty())
    throw UsageError(fmt::format("--weights '{}': {}; give open_clip's .safetensors file", weights, problem));
  if (out.empty() || (std::filesystem::exists(out) && !std::filesystem::is_directory(out)))
    throw UsageError(fmt::format("--out '{}': the model folder to write (a file of that name is in the way)", out));
  convert_openclip(openclip_model_config(config), weights, out, image_size);
  fmt::print("wrote model folder {} (model.safetensors, config.yaml, CLIP BPE tokenizer)\n", out);
  return 0;
}

int export_main(const Argv& argv) {
  Args args(argv);
  const std::string model = args.require("model"), out = args.require("out");
  args.finish();
  // PREFIX names two files, PREFIX.safetensors and PREFIX.json: a folder is not a prefix.
  if (out.empty() || out.back() == '/' || std::filesystem::is_directory(out))
    throw UsageError(fmt::format("--out '{}': a PREFIX for PREFIX.safetensors and PREFIX.json, not a folder (e.g. {}model)",
                                 out, out.empty() || out.back() == '/' ? out : out + "/"));
  check_output_path(out + ".safetensors", "--out");
  export_openclip(model, out);
  fmt::print("wrote {0}.safetensors and {0}.json; in Python: open_clip.CLIP(**json.load(open('{0}.json'))) then "
             "load_state_dict(safetensors.torch.load_file('{0}.safetensors'))\n", out);
  return 0;
}

}  // namespace torchclip::tools
