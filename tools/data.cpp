#include "data/check.h"
#include "data/pack.h"
#include "data/prepare.h"
#include "io/fsutil.h"
#include "subcommands.h"
#include "util/args.h"
#include "util/json.h"

#include <fmt/format.h>

namespace torchclip::tools {

data::CsvOptions csv_flags(Args& args) {
  data::CsvOptions o;
  o.img_key(args.get("csv-img-key", o.img_key()))
      .caption_key(args.get("csv-caption-key", o.caption_key()))
      .label_key(args.get("csv-label-key", o.label_key()));
  const std::string sep = args.get("csv-separator", "");
  if (sep == "\\t" || sep == "tab") {
    o.separator('\t');
  } else if (sep.size() == 1) {
    o.separator(sep[0]);
  } else if (!sep.empty()) {
    throw UsageError(fmt::format("--csv-separator takes one character (or \\t), got '{}'", sep));
  }
  return o;
}

/// data pack --data SOURCE --image-size N --out FILE.safetensors
int pack_main(Args& args) {
  const std::string spec = args.require("data");
  auto csv = csv_flags(args);
  data::PackOptions o;
  o.out(args.require("out"))
      .image_size(args.get_int("image-size", o.image_size(), 1, 4096))
      .workers(args.get_int("workers", o.workers(), 1, 256))
      .resize(parse_enum<ResizeMode>(args.get("resize", "pil"), "--resize"));
  const bool json = args.flag("json");
  args.finish();
  check_output_path(o.out(), "--out");
  const auto r = data::write_pack(data::open_source(spec, csv), load_tokenizer("clip-bpe"), o.progress(!json));
  if (json) {
    fmt::print("{{\"out\": {}, \"images\": {}, \"skipped\": {}, \"bytes\": {}, \"seconds\": {:.3f}}}\n", json_quote(o.out()),
               r.images, r.skipped, r.bytes, r.seconds);
  } else {
    fmt::print("packed {} images of {}x{} ({} skipped) into {} ({:.1f} MB) in {:.1f} s\n", r.images, o.image_size(),
               o.image_size(), r.skipped, o.out(), r.bytes / 1e6, r.seconds);
    for (const auto& [reason, count] : r.skipped_by_reason) fmt::print("  skipped {}: {}\n", reason, count);
  }
  return 0;
}

int data_main(const Argv& argv) {
  const std::string verb = argv.empty() ? "" : argv[0];
  Args args(Argv(argv.empty() ? argv.begin() : argv.begin() + 1, argv.end()));
  if (verb == "pack") return pack_main(args);
  if (verb != "check") throw UsageError("data needs a verb: data check, data pack");
  const std::string spec = args.require("data");
  auto csv = csv_flags(args);
  auto tokenizer = load_tokenizer(args.get("tokenizer", "clip-bpe"));
  data::LoaderOptions o;
  o.workers(args.get_int("workers", 2, 1, 256))
      .batch_size(256)
      .context_length(args.get_int("context-length", 77, 1, 4096))
      .max_image_pixels(args.get_int("max-image-pixels", o.max_image_pixels(), 1, 10000000000));
  const bool json = args.flag("json");
  args.finish();
  auto report = data::check_dataset(data::open_source(spec, csv), tokenizer, o, !json);
  fmt::print("{}\n", json ? report.to_json() : report.to_text());
  return 0;
}

int prepare_main(const Argv& argv) {
  const std::string what = argv.empty() ? "" : argv[0];
  Args args(Argv(argv.empty() ? argv.begin() : argv.begin() + 1, argv.end()));
  if (what != "fashion-mnist") throw UsageError("prepare knows one dataset: prepare fashion-mnist");
  data::PrepareFashionMnistOptions o;
  o.out(args.get("out", o.out())).format(args.get("format", o.format())).source(args.get("source", o.source()));
  args.finish();
  auto r = data::prepare_fashion_mnist(o);
  fmt::print("prepared Fashion-MNIST: {} training and {} test images\n", r.train, r.test);
  for (const auto& f : r.files) fmt::print("  {}\n", f);
  return 0;
}

}  // namespace torchclip::tools
