// The subcommands of the torchclip binary. Each parses its flags and calls the library.
#pragma once

#include <string>
#include <vector>

namespace torchclip::tools {

using Argv = std::vector<std::string>;

int bench_main(const Argv& args);
int model_info_main(const Argv& args);
int tokenizer_main(const Argv& args);
int data_main(const Argv& args);
int prepare_main(const Argv& args);
int train_main(const Argv& args);
int eval_main(const Argv& args);
int convert_main(const Argv& args);
int export_main(const Argv& args);

}  // namespace torchclip::tools
