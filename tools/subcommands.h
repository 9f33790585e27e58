// The subcommands of the torchclip binary. Each parses its flags and calls the library.
#pragma once

#include "data/source.h"
#include "util/args.h"

#include <string>
#include <vector>

namespace torchclip::tools {

using Argv = std::vector<std::string>;

/// The CSV column flags every command reading a data source shares (OpenCLIP's names):
/// --csv-img-key, --csv-caption-key, --csv-label-key, --csv-separator. Defined in data.cpp.
data::CsvOptions csv_flags(Args& args);

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
