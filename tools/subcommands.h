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

/// Image paths from --images (repeatable; further bare arguments are more paths). zeroshot.cpp.
std::vector<std::string> image_args(Args& args);
/// The images to read: files/folders, else an ImageFolder tree labelled by `classes`, else a
/// CSV (label column "label" unless --csv-label-key) or tar shards. Defined in zeroshot.cpp.
std::shared_ptr<data::SampleSource> image_source(const std::vector<std::string>& images, const std::string& spec,
                                                 data::CsvOptions csv, const std::vector<std::string>& classes);

int bench_main(const Argv& args);
int model_info_main(const Argv& args);
int tokenizer_main(const Argv& args);
int data_main(const Argv& args);
int prepare_main(const Argv& args);
int train_main(const Argv& args);
int eval_main(const Argv& args);
int convert_main(const Argv& args);
int export_main(const Argv& args);
int zeroshot_main(const Argv& args);
int embed_main(const Argv& args);
int index_main(const Argv& args);
int search_main(const Argv& args);
#if TORCHCLIP_HAVE_SERVE
int serve_main(const Argv& args);
/// `bench serve`: defined in serve.cpp, next to the server it loads.
int bench_serve_main(Args& args);
#endif

}  // namespace torchclip::tools
