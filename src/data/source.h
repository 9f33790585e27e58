// Where samples come from: a CSV/TSV of image paths and captions, WebDataset tar shards, or a
// synthetic generator. A source opens one deterministic stream per (epoch, rank, worker), so
// ranks and loader workers read disjoint parts and every sample is seen once per epoch.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace torchclip::data {

/// A sample that cannot be used. `reason` is a short stable key ("image_truncated", ...);
/// what() says what happened.
class SampleError : public std::runtime_error {
 public:
  SampleError(std::string reason, const std::string& what) : std::runtime_error(what), reason(std::move(reason)) {}
  std::string reason;
};

/// One image-caption pair before decoding. One of `pixels`, `image_bytes` or `image_path` is set.
struct RawSample {
  at::Tensor pixels;       // uint8 [H, W, 3] RGB, already decoded (a tensor file's view)
  std::string image_bytes;
  std::string image_path;  // read by the worker (CSV)
  std::string caption;
  int64_t label = -1;
  std::string origin;  // "train.csv:12" or "shard-000003.tar:key", for messages
  /// Set when the sample is already known to be unusable (bad CSV row, tar member without
  /// caption, truncated tar): the reason key, and the message.
  std::string error_reason, error_message;
};

/// Which part of an epoch a stream covers.
struct StreamSpec {
  uint64_t seed = 0;
  int64_t epoch = 0;
  int64_t rank = 0, world_size = 1;
  int64_t worker = 0, workers = 1;
  bool shuffle = true;
  int64_t shuffle_buffer = 1000;  // WebDataset sample shuffle buffer (per worker)
};

class SampleStream {
 public:
  virtual ~SampleStream() = default;
  /// The next sample, or false at the end of this stream.
  virtual bool next(RawSample& out) = 0;
};

class SampleSource {
 public:
  virtual ~SampleSource() = default;
  /// A stream may point into its source (a CSV's rows, a tensor file's mapping): the source must
  /// outlive every stream it opened.
  virtual std::unique_ptr<SampleStream> open(const StreamSpec& spec) const = 0;
  /// Number of samples per epoch when known up front (CSV, synthetic), else -1.
  virtual int64_t size() const { return -1; }
  virtual std::string describe() const = 0;
};

struct CsvOptions {
  /// Column names, as OpenCLIP's --csv-img-key / --csv-caption-key.
  TORCH_ARG(std::string, img_key) = "filepath";
  TORCH_ARG(std::string, caption_key) = "title";
  /// Optional integer class column (for zero-shot evaluation); empty: none.
  TORCH_ARG(std::string, label_key) = "";
  /// Field separator; 0: sniffed from the header (tab or comma), else ',' for .csv files and
  /// tab otherwise (OpenCLIP's default).
  TORCH_ARG(char, separator) = 0;
  /// When > 0, labels must lie in [0, num_classes): a label past the class list is an error
  /// naming file:line (negative labels mean "unlabelled").
  TORCH_ARG(int64_t, num_classes) = 0;
};

/// A CSV/TSV with a header row; RFC 4180 quoting (fields may hold separators, quotes as "",
/// and line breaks). Relative image paths resolve against the CSV's folder. A missing column is
/// an error naming the file and the columns it has.
std::shared_ptr<SampleSource> csv_source(const std::string& path, const CsvOptions& options = {});

/// WebDataset shards: "dir/shard-{000000..000099}.tar", several specs joined with "::".
/// A sample is the members sharing a key: an image (jpg, jpeg, png, webp), a caption (txt),
/// optionally json and cls (integer label).
std::shared_ptr<SampleSource> webdataset_source(const std::string& spec);

/// `count` deterministic JPEG images of `width` x `height` with captions, for tests and benchmarks.
std::shared_ptr<SampleSource> synthetic_source(int64_t count, int width = 500, int height = 375, int quality = 90);

/// Image files without captions: each path is a file, or a folder read recursively for .jpg,
/// .jpeg, .png, .webp and .bmp files (sorted). A missing path is an error naming it.
std::shared_ptr<SampleSource> image_files_source(const std::vector<std::string>& paths);
std::vector<std::string> expand_image_paths(const std::vector<std::string>& paths);

/// The class folders of an ImageFolder tree (root/CLASS/**/image), sorted.
std::vector<std::string> image_folder_classes(const std::string& root);

/// An ImageFolder tree labelled by `classes`: each folder's name must equal a class name, with
/// underscores read as spaces ("ankle_boot" is "ankle boot"); otherwise an error lists the classes.
std::shared_ptr<SampleSource> image_folder_source(const std::string& root, const std::vector<std::string>& classes);

/// A tensor file written by write_pack (`torchclip data pack`): uint8 RGB images [N, H, W, 3]
/// with their captions and labels, memory-mapped, decoded already: it needs no image decoder.
/// A file that is not one is an error naming it and what is missing.
std::shared_ptr<SampleSource> pack_source(const std::string& path);
/// The `format` metadata value a tensor file carries.
constexpr const char* kPackFormat = "torchclip-pack-v1";

/// Chooses by the spec: "synthetic:N[:WxH]", a .safetensors tensor file, a .tar shard pattern, a
/// folder (ImageFolder tree labelled by its sorted folder names), else a CSV/TSV file.
std::shared_ptr<SampleSource> open_source(const std::string& spec, const CsvOptions& csv = {});

/// Whether `spec` names WebDataset shards: every "::"-joined part ends in ".tar".
bool is_shard_spec(const std::string& spec);

/// Brace expansion of shard names: "a-{00..02}.tar::b.tar" -> a-00.tar a-01.tar a-02.tar b.tar.
std::vector<std::string> expand_shards(const std::string& spec);

/// Parses CSV text into rows of fields; each row also records the line it starts on. A row that
/// breaks the quoting rules (text after a closing quote, a quote never closed) is kept with
/// `malformed` saying why, so the reader counts and skips it; a quote never closed does not
/// swallow the rows after it (they are read again line by line).
struct CsvRow {
  std::vector<std::string> fields;
  int64_t line = 0;
  std::string malformed;
};
std::vector<CsvRow> parse_csv(const std::string& text, char separator);

}  // namespace torchclip::data
