#include "subcommands.h"
#include "interop/openclip.h"
#include "util/args.h"

#include <fmt/format.h>

namespace torchclip::tools {

int convert_main(const Argv& argv) {
  Args args(argv);
  const std::string config = args.require("openclip-config"), weights = args.require("weights"), out = args.require("out");
  const int64_t image_size = args.get_int("image-size", 0, 0, 4096);
  args.finish();
  convert_openclip(openclip_model_config(config), weights, out, image_size);
  fmt::print("wrote model folder {} (model.safetensors, config.yaml, CLIP BPE tokenizer)\n", out);
  return 0;
}

int export_main(const Argv& argv) {
  Args args(argv);
  const std::string model = args.require("model"), out = args.require("out");
  args.finish();
  export_openclip(model, out);
  fmt::print("wrote {0}.safetensors and {0}.json; in Python: open_clip.CLIP(**json.load(open('{0}.json'))) then "
             "load_state_dict(safetensors.torch.load_file('{0}.safetensors'))\n", out);
  return 0;
}

}  // namespace torchclip::tools
