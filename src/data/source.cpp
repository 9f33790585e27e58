#include "data/source.h"

#include "data/tar.h"
#include "data/transform.h"
#include "io/fsutil.h"
#include "io/safetensors.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#if TORCHCLIP_HAVE_OPENCV
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

#include <algorithm>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

namespace torchclip::data {
namespace fs = std::filesystem;

namespace {

/// Deterministic permutation of [0, n) for (seed, epoch).
std::vector<int64_t> permutation(int64_t n, uint64_t seed, int64_t epoch, bool shuffle) {
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  if (shuffle) {
    std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(epoch) + 1);
    std::shuffle(order.begin(), order.end(), rng);
  }
  return order;
}

/// Positions of a permutation that belong to (rank, worker): rank-major striping.
std::vector<int64_t> stripe(const std::vector<int64_t>& order, const StreamSpec& s) {
  std::vector<int64_t> mine;
  int64_t k = 0;
  for (size_t p = 0; p < order.size(); ++p) {
    if (static_cast<int64_t>(p) % s.world_size != s.rank) continue;
    if (k++ % s.workers == s.worker) mine.push_back(order[p]);
  }
  return mine;
}

// ---- CSV ---------------------------------------------------------------------------------

/// A source whose samples are all known up front (CSV rows, image files).
class ListSource : public SampleSource {
 public:
  std::unique_ptr<SampleStream> open(const StreamSpec& spec) const override {
    struct Stream : SampleStream {
      const std::vector<RawSample>* samples;
      std::vector<int64_t> indices;
      size_t pos = 0;
      bool next(RawSample& out) override {
        if (pos >= indices.size()) return false;
        out = (*samples)[indices[pos++]];
        return true;
      }
    };
    auto s = std::make_unique<Stream>();
    s->samples = &samples_;
    s->indices = stripe(permutation(static_cast<int64_t>(samples_.size()), spec.seed, spec.epoch, spec.shuffle), spec);
    return s;
  }
  int64_t size() const override { return static_cast<int64_t>(samples_.size()); }

 protected:
  std::vector<RawSample> samples_;
};

/// The separator of a header line: tab or comma, whichever it has when it has only one of them
/// (a tab-separated ".csv" is common, and OpenCLIP's own default is tab); otherwise `fallback`.
char sniff_separator(const std::string& text, char fallback) {
  const std::string header = text.substr(0, text.find_first_of("\r\n"));
  bool quoted = false, tab = false, comma = false;
  for (char c : header) {
    if (c == '"') quoted = !quoted;
    else if (!quoted && c == '\t') tab = true;
    else if (!quoted && c == ',') comma = true;
  }
  if (tab != comma) return tab ? '\t' : ',';
  return fallback;
}

class CsvSource : public ListSource {
 public:
  CsvSource(std::string path, const CsvOptions& o) : path_(std::move(path)) {
    const std::string dir = fs::path(path_).parent_path().string();
    std::string text = read_file(path_);
    if (text.rfind("\xEF\xBB\xBF", 0) == 0) text.erase(0, 3);  // a UTF-8 byte-order mark before the header
    char sep = o.separator();
    if (sep == 0) sep = sniff_separator(text, fs::path(path_).extension() == ".csv" ? ',' : '\t');
    separator_ = sep;
    auto rows = parse_csv(text, sep);
    if (rows.empty()) throw std::runtime_error(fmt::format("{}: empty file; expected a header row", path_));
    const auto& header = rows[0].fields;
    auto column = [&](const std::string& name) -> int64_t {
      auto it = std::find(header.begin(), header.end(), name);
      if (it == header.end()) {
        throw std::runtime_error(fmt::format("{}:1: no column '{}'; the header has: {} (separator '{}')", path_, name,
                                             fmt::join(header, ", "), sep == '\t' ? "\\t" : std::string(1, sep)));
      }
      return it - header.begin();
    };
    const int64_t img = column(o.img_key()), cap = column(o.caption_key());
    const int64_t lab = o.label_key().empty() ? -1 : column(o.label_key());
    const size_t needed = static_cast<size_t>(std::max({img, cap, lab})) + 1;
    for (size_t r = 1; r < rows.size(); ++r) {
      const CsvRow& row = rows[r];
      if (row.fields.size() == 1 && row.fields[0].empty()) continue;  // blank line
      RawSample s;
      s.origin = fmt::format("{}:{}", path_, row.line);
      if (!row.malformed.empty()) {
        s.error_reason = "csv_malformed";
        s.error_message = row.malformed;
      } else if (row.fields.size() < needed) {
        s.error_reason = "csv_too_few_columns";
        s.error_message = fmt::format("{} columns, need at least {}", row.fields.size(), needed);
      } else {
        const std::string& p = row.fields[img];
        s.image_path = fs::path(p).is_absolute() || dir.empty() ? p : (fs::path(dir) / p).string();
        if (p.find_first_not_of(" \t") == std::string::npos) {  // joined to the CSV's folder it would name a folder
          s.error_reason = "csv_empty_path";
          s.error_message = "the image path is empty";
        }
        s.caption = row.fields[cap];
        if (s.caption.find_first_not_of(" \t\r\n") == std::string::npos) {
          s.error_reason = "empty_caption";
          s.error_message = "the caption is empty";
        }
        if (lab >= 0) {
          try {
            size_t used = 0;
            s.label = std::stoll(row.fields[lab], &used);
            if (used != row.fields[lab].size()) throw std::invalid_argument("trailing");
          } catch (const std::exception&) {
            s.error_reason = "csv_bad_label";
            s.error_message = fmt::format("label '{}' is not an integer", row.fields[lab]);
          }
          // Labels index the class list: one past it (1-based labels, another dataset's classes)
          // would be read out of bounds or scored as a miss, so the file is refused here.
          if (o.num_classes() > 0 && s.label >= o.num_classes())
            throw std::runtime_error(fmt::format("{}: label {} is outside [0, {}]: there are {} classes, and labels are "
                                                 "0-based indices into the class list",
                                                 s.origin, s.label, o.num_classes() - 1, o.num_classes()));
        }
      }
      samples_.push_back(std::move(s));
    }
  }

  std::string describe() const override {
    return fmt::format("csv {} ({} rows, {}-separated)", path_, samples_.size(), separator_ == '\t' ? "tab" : std::string(1, separator_));
  }

 private:
  std::string path_;
  char separator_ = ',';
};

// ---- image files and ImageFolder trees ------------------------------------------------------

bool has_image_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".webp" || ext == ".bmp";
}

/// Image files under `dir`, recursively, sorted by path.
std::vector<std::string> images_under(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, fs::directory_options::follow_directory_symlink, ec), end; !ec && it != end;
       it.increment(ec)) {
    if (it->is_regular_file(ec) && has_image_extension(it->path())) out.push_back(it->path().string());
  }
  if (ec) throw std::runtime_error(fmt::format("{}: cannot list: {}", dir.string(), ec.message()));
  std::sort(out.begin(), out.end());
  return out;
}

class ImageFilesSource : public ListSource {
 public:
  ImageFilesSource(std::vector<std::string> files, std::vector<int64_t> labels, std::string what)
      : what_(std::move(what)) {
    for (size_t i = 0; i < files.size(); ++i) {
      RawSample s;
      s.image_path = files[i];
      s.origin = files[i];
      s.label = labels.empty() ? -1 : labels[i];
      samples_.push_back(std::move(s));
    }
  }
  std::string describe() const override { return fmt::format("{} ({} images)", what_, samples_.size()); }

 private:
  std::string what_;
};

// ---- WebDataset ---------------------------------------------------------------------------

class WebDatasetSource : public SampleSource {
 public:
  explicit WebDatasetSource(std::string spec) : spec_(std::move(spec)), shards_(expand_shards(spec_)) {
    if (shards_.empty()) throw std::runtime_error(fmt::format("'{}' names no shards", spec_));
  }

  std::unique_ptr<SampleStream> open(const StreamSpec& spec) const override {
    auto order = permutation(static_cast<int64_t>(shards_.size()), spec.seed, spec.epoch, spec.shuffle);
    std::vector<std::string> mine;
    for (int64_t i : stripe(order, spec)) mine.push_back(shards_[i]);
    return std::make_unique<Stream>(std::move(mine), spec);
  }
  std::string describe() const override { return fmt::format("webdataset {} ({} shards)", spec_, shards_.size()); }

 private:
  /// Groups members into samples, shard after shard, through a seeded shuffle buffer.
  class Stream : public SampleStream {
   public:
    Stream(std::vector<std::string> shards, const StreamSpec& spec)
        : shards_(std::move(shards)), buffer_size_(spec.shuffle ? std::max<int64_t>(1, spec.shuffle_buffer) : 1),
          rng_(spec.seed * 0x9E3779B97F4A7C15ULL ^ (static_cast<uint64_t>(spec.epoch) << 32) ^
               static_cast<uint64_t>(spec.rank * 7919 + spec.worker)) {}

    bool next(RawSample& out) override {
      while (static_cast<int64_t>(buffer_.size()) < buffer_size_ && fill_one()) {
      }
      if (buffer_.empty()) return false;
      std::uniform_int_distribution<size_t> pick(0, buffer_.size() - 1);
      const size_t k = buffer_size_ > 1 ? pick(rng_) : 0;
      out = std::move(buffer_[k]);
      buffer_.erase(buffer_.begin() + static_cast<std::ptrdiff_t>(k));
      return true;
    }

   private:
    /// Reads one more grouped sample into the buffer; false when every shard is done.
    bool fill_one() {
      for (;;) {
        if (!reader_) {
          if (next_shard_ >= shards_.size()) return flush();
          shard_ = shards_[next_shard_++];
          reader_ = std::make_unique<TarReader>(shard_);
          if (!reader_->ok()) {
            reader_.reset();
            RawSample bad;
            bad.origin = shard_;
            bad.error_reason = "shard_missing";
            bad.error_message = "cannot open the shard";
            buffer_.push_back(std::move(bad));
            return true;
          }
        }
        std::string name, data;
        bool more = false;
        try {
          more = reader_->next(name, data);
        } catch (const SampleError& e) {
          // The rest of the shard is lost. A sample already holding its image and caption is
          // complete and still paired correctly; anything else being grouped is counted as lost.
          reader_.reset();
          if (!(has_image_ && has_caption_)) {
            current_key_.clear();
            current_ = RawSample();
            has_image_ = has_caption_ = false;
          }
          flush();
          RawSample lost;
          lost.origin = shard_;
          lost.error_reason = e.reason;
          lost.error_message = e.what();
          buffer_.push_back(std::move(lost));
          return true;
        }
        if (!more) {
          reader_.reset();
          if (flush()) return true;
          continue;
        }
        const size_t slash = name.rfind('/');
        const size_t dot = name.find('.', slash == std::string::npos ? 0 : slash + 1);
        const std::string key = name.substr(0, dot);
        if (key.empty() || key.back() == '/') {  // ".txt", "dir/.jpg": no sample key, so no sample to join
          flush();
          RawSample bad;
          bad.origin = fmt::format("{}:{}", shard_, name);
          bad.error_reason = "tar_empty_key";
          bad.error_message = "a member whose name has no key before its extension";
          buffer_.push_back(std::move(bad));
          return true;
        }
        std::string ext = dot == std::string::npos ? "" : name.substr(dot + 1);
        std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
        bool emitted = false;
        if (!current_key_.empty() && key != current_key_) emitted = flush();
        current_key_ = key;
        current_.origin = fmt::format("{}:{}", shard_, key);
        if (ext == "jpg" || ext == "jpeg" || ext == "png" || ext == "webp" || ext == "bmp") {
          current_.image_bytes = std::move(data);
          has_image_ = true;
        } else if (ext == "txt") {
          current_.caption = std::move(data);
          has_caption_ = true;
        } else if (ext == "cls") {
          try {
            current_.label = std::stoll(data);
          } catch (const std::exception&) {
            current_.label = -1;
          }
        }
        if (emitted) return true;
      }
    }

    /// Emits the sample being grouped, if any; returns whether one was emitted.
    bool flush(bool force = false) {
      if (current_key_.empty() && !force) return false;
      if (current_.error_reason.empty()) {
        if (!has_image_) {
          current_.error_reason = "tar_no_image";
          current_.error_message = "a caption without an image";
        } else if (!has_caption_) {
          current_.error_reason = "tar_no_caption";
          current_.error_message = "an image without a caption (.txt)";
        } else if (current_.caption.find_first_not_of(" \t\r\n") == std::string::npos) {
          current_.error_reason = "empty_caption";  // as for CSV rows
          current_.error_message = "the caption is empty";
        }
      }
      buffer_.push_back(std::move(current_));
      current_ = RawSample();
      current_key_.clear();
      has_image_ = has_caption_ = false;
      return true;
    }

    std::vector<std::string> shards_;
    size_t next_shard_ = 0;
    std::string shard_;
    std::unique_ptr<TarReader> reader_;
    std::string current_key_;
    RawSample current_;
    bool has_image_ = false, has_caption_ = false;
    int64_t buffer_size_;
    std::deque<RawSample> buffer_;
    std::mt19937_64 rng_;
  };

  std::string spec_;
  std::vector<std::string> shards_;
};

// ---- synthetic ----------------------------------------------------------------------------

class SyntheticSource : public SampleSource {
 public:
  SyntheticSource(int64_t count, int w, int h, int quality) : count_(count), w_(w), h_(h) {
    // A few distinct images, reused: generating is not what benchmarks should measure.
    for (int k = 0; k < 8; ++k) {
#if TORCHCLIP_HAVE_OPENCV
      cv::Mat img(h, w, CV_8UC3);
      cv::RNG rng(k + 1);
      rng.fill(img, cv::RNG::UNIFORM, 0, 255);
      cv::GaussianBlur(img, img, cv::Size(0, 0), 3.0);  // photo-like smoothness, realistic JPEG size
      std::vector<unsigned char> buf;
      cv::imencode(".jpg", img, buf, {cv::IMWRITE_JPEG_QUALITY, quality});
      images_.emplace_back(buf.begin(), buf.end());
#else
      // No encoder in this build: the same kind of smooth noise, handed over as decoded pixels.
      at::Tensor noise = at::randint(0, 256, {1, 3, h, w}, at::make_generator<at::CPUGeneratorImpl>(k + 1),
                                     at::TensorOptions().dtype(at::kFloat));
      at::Tensor smooth = at::avg_pool2d(noise, 7, 1, 3, /*ceil_mode=*/false, /*count_include_pad=*/false);
      pixels_.push_back(smooth[0].permute({1, 2, 0}).round().clamp(0, 255).to(at::kByte).contiguous());  // [H, W, 3]
#endif
    }
  }
  std::unique_ptr<SampleStream> open(const StreamSpec& spec) const override {
    struct Stream : SampleStream {
      const SyntheticSource* src;
      std::vector<int64_t> indices;
      size_t pos = 0;
      bool next(RawSample& out) override {
        if (pos >= indices.size()) return false;
        const int64_t i = indices[pos++];
        out = RawSample();
        if (src->images_.empty()) out.pixels = src->pixels_[i % src->pixels_.size()];
        else out.image_bytes = src->images_[i % src->images_.size()];
        out.caption = fmt::format("a synthetic photo number {} of pattern {}", i, i % 8);
        out.label = i % 8;
        out.origin = fmt::format("synthetic:{}", i);
        return true;
      }
    };
    auto s = std::make_unique<Stream>();
    s->src = this;
    s->indices = stripe(permutation(count_, spec.seed, spec.epoch, spec.shuffle), spec);
    return s;
  }
  int64_t size() const override { return count_; }
  std::string describe() const override { return fmt::format("synthetic {} images of {}x{}", count_, w_, h_); }

 private:
  int64_t count_;
  int w_, h_;
  std::vector<std::string> images_;  // JPEG bytes (builds with OpenCV)
  std::vector<at::Tensor> pixels_;   // uint8 [H, W, 3] (builds without)
};

// ---- tensor files (`torchclip data pack`) ---------------------------------------------------

class PackSource : public SampleSource {
 public:
  explicit PackSource(std::string path) : path_(std::move(path)) {
    SafetensorsFile f = map_safetensors(path_);
    auto fail = [&](const std::string& what) {
      return std::runtime_error(fmt::format("{}: not a torchclip tensor file ({}); write one with `torchclip data pack`",
                                            path_, what));
    };
    auto it = f.metadata.find("format");
    if (it == f.metadata.end() || it->second != kPackFormat) throw fail("no __metadata__ format: " + std::string(kPackFormat));
    auto tensor = [&](const char* name, at::ScalarType type, int64_t dim) {
      auto t = f.tensors.find(name);
      if (t == f.tensors.end()) throw fail(fmt::format("no tensor '{}'", name));
      if (t->second.scalar_type() != type || t->second.dim() != dim)
        throw fail(fmt::format("tensor '{}' is {} with {} dimensions, expected {} with {}", name,
                               c10::toString(t->second.scalar_type()), t->second.dim(), c10::toString(type), dim));
      return t->second;
    };
    images_ = tensor("images", at::kByte, 4);  // [N, H, W, 3]
    caption_bytes_ = tensor("caption_bytes", at::kByte, 1);
    offsets_ = tensor("caption_offsets", at::kLong, 1);  // [N + 1]
    labels_ = tensor("labels", at::kLong, 1);            // [N]
    const int64_t n = images_.size(0);
    if (images_.size(3) != 3) throw fail(fmt::format("images have {} channels, expected [N, H, W, 3]", images_.size(3)));
    if (offsets_.size(0) != n + 1 || labels_.size(0) != n)
      throw fail(fmt::format("{} images but {} caption offsets and {} labels", n, offsets_.size(0), labels_.size(0)));
    const int64_t* off = offsets_.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i)
      if (off[i] > off[i + 1]) throw fail(fmt::format("caption_offsets decrease at {}", i));
    if (off[0] != 0 || off[n] != caption_bytes_.size(0))
      throw fail(fmt::format("caption_offsets span [{}, {}], caption_bytes has {}", off[0], off[n], caption_bytes_.size(0)));
  }
  std::unique_ptr<SampleStream> open(const StreamSpec& spec) const override {
    struct Stream : SampleStream {
      const PackSource* src;
      std::vector<int64_t> indices;
      size_t pos = 0;
      bool next(RawSample& out) override {
        if (pos >= indices.size()) return false;
        const int64_t i = indices[pos++];
        const int64_t* off = src->offsets_.data_ptr<int64_t>();
        out = RawSample();
        out.pixels = src->images_[i];  // a view of the mapping: [H, W, 3]
        out.caption.assign(reinterpret_cast<const char*>(src->caption_bytes_.data_ptr<uint8_t>()) + off[i],
                           static_cast<size_t>(off[i + 1] - off[i]));
        out.label = src->labels_.data_ptr<int64_t>()[i];
        out.origin = fmt::format("{}:{}", src->path_, i);
        return true;
      }
    };
    auto s = std::make_unique<Stream>();
    s->src = this;
    s->indices = stripe(permutation(size(), spec.seed, spec.epoch, spec.shuffle), spec);
    return s;
  }
  int64_t size() const override { return images_.size(0); }
  std::string describe() const override {
    return fmt::format("tensor file {} ({} images of {}x{})", path_, images_.size(0), images_.size(2), images_.size(1));
  }

 private:
  std::string path_;
  at::Tensor images_, caption_bytes_, offsets_, labels_;
};

}  // namespace

std::vector<std::string> expand_image_paths(const std::vector<std::string>& paths) {
  std::vector<std::string> out;
  for (const auto& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      auto found = images_under(p);
      out.insert(out.end(), found.begin(), found.end());
    } else if (fs::exists(p, ec)) {
      out.push_back(p);
    } else {
      throw std::runtime_error(fmt::format("{}: no such file or folder", p));
    }
  }
  return out;
}

std::shared_ptr<SampleSource> image_files_source(const std::vector<std::string>& paths) {
  require_image_decoders(fmt::format("{}: image files", fmt::join(paths, ", ")));
  auto files = expand_image_paths(paths);
  if (files.empty()) throw std::runtime_error(fmt::format("no image files (.jpg .jpeg .png .webp .bmp) in {}", fmt::join(paths, ", ")));
  return std::make_shared<ImageFilesSource>(std::move(files), std::vector<int64_t>{},
                                            fmt::format("image files from {}", fmt::join(paths, ", ")));
}

std::vector<std::string> image_folder_classes(const std::string& root) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_directory(ec)) names.push_back(it->path().filename().string());
  if (ec) throw std::runtime_error(fmt::format("{}: cannot list: {}", root, ec.message()));
  std::sort(names.begin(), names.end());
  if (names.empty()) throw std::runtime_error(fmt::format("{}: an ImageFolder tree needs one subfolder per class", root));
  return names;
}

std::shared_ptr<SampleSource> image_folder_source(const std::string& root, const std::vector<std::string>& classes) {
  require_image_decoders(fmt::format("{}: an ImageFolder tree", root));
  auto folders = image_folder_classes(root);
  auto spaced = [](std::string n) {
    std::replace(n.begin(), n.end(), '_', ' ');
    return n;
  };
  std::vector<std::string> files;
  std::vector<int64_t> labels;
  for (const auto& folder : folders) {
    auto it = std::find(classes.begin(), classes.end(), folder);
    if (it == classes.end()) it = std::find(classes.begin(), classes.end(), spaced(folder));
    if (it == classes.end())
      throw std::runtime_error(fmt::format("{}/{}: folder matches no class name (underscores read as spaces); classes: {}",
                                           root, folder, fmt::join(classes, ", ")));
    for (auto& f : images_under(fs::path(root) / folder)) {
      files.push_back(std::move(f));
      labels.push_back(it - classes.begin());
    }
  }
  return std::make_shared<ImageFilesSource>(std::move(files), std::move(labels), fmt::format("image folder {}", root));
}

std::vector<std::string> expand_shards(const std::string& spec) {
  constexpr int64_t kMaxShards = 10000000;
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= spec.size()) {
    size_t end = spec.find("::", start);
    if (end == std::string::npos) end = spec.size();
    std::vector<std::string> parts = {spec.substr(start, end - start)};
    for (bool changed = true; changed;) {  // expand the first brace of each part until none is left
      changed = false;
      std::vector<std::string> next;
      for (const auto& p : parts) {
        const size_t open = p.find('{'), close = p.find('}', open);
        const size_t dots = open == std::string::npos ? std::string::npos : p.find("..", open);
        if (open == std::string::npos || close == std::string::npos || dots == std::string::npos || dots > close) {
          next.push_back(p);
          continue;
        }
        const std::string lo = p.substr(open + 1, dots - open - 1), hi = p.substr(dots + 2, close - dots - 2);
        int64_t a = 0, b = 0;
        try {
          a = std::stoll(lo);
          b = std::stoll(hi);
        } catch (const std::exception&) {
          throw std::invalid_argument(fmt::format("'{}': brace range {{{}..{}}} is not numeric", spec, lo, hi));
        }
        if (a < 0) throw std::invalid_argument(fmt::format("'{}': brace range {{{}..{}}} starts below 0", spec, lo, hi));
        if (b < a) throw std::invalid_argument(fmt::format("'{}': brace range {{{}..{}}} is empty", spec, lo, hi));
        if (b - a >= kMaxShards || static_cast<int64_t>(next.size()) + (b - a) >= kMaxShards)
          throw std::invalid_argument(fmt::format("'{}': brace range {{{}..{}}} names more than {} shards", spec, lo, hi, kMaxShards));
        for (int64_t v = a; v <= b; ++v) {
          next.push_back(p.substr(0, open) + fmt::format("{:0{}d}", v, static_cast<int>(lo.size())) + p.substr(close + 1));
        }
        changed = true;
      }
      parts = std::move(next);
    }
    for (auto& p : parts)
      if (!p.empty()) out.push_back(std::move(p));
    if (end == spec.size()) break;
    start = end + 2;
  }
  return out;
}

std::shared_ptr<SampleSource> csv_source(const std::string& path, const CsvOptions& o) {
  require_image_decoders(fmt::format("{}: a CSV of image files", path));
  return std::make_shared<CsvSource>(path, o);
}
std::shared_ptr<SampleSource> webdataset_source(const std::string& spec) {
  require_image_decoders(fmt::format("{}: WebDataset shards", spec));
  return std::make_shared<WebDatasetSource>(spec);
}
std::shared_ptr<SampleSource> pack_source(const std::string& path) { return std::make_shared<PackSource>(path); }
std::shared_ptr<SampleSource> synthetic_source(int64_t count, int w, int h, int quality) {
  return std::make_shared<SyntheticSource>(count, w, h, quality);
}

bool is_shard_spec(const std::string& spec) {
  for (size_t start = 0;;) {  // every "::"-joined part names .tar files
    const size_t end = std::min(spec.find("::", start), spec.size());
    const std::string part = spec.substr(start, end - start);
    if (part.size() < 4 || part.compare(part.size() - 4, 4, ".tar") != 0) return false;
    if (end == spec.size()) return true;
    start = end + 2;
  }
}

std::shared_ptr<SampleSource> open_source(const std::string& spec, const CsvOptions& csv) {
  constexpr int64_t kMaxSyntheticSamples = 100000000;  // its epoch order alone is 8 bytes a sample
  if (spec.rfind("synthetic:", 0) == 0) {
    int64_t n = 0;
    int w = 500, h = 375;
    if (std::sscanf(spec.c_str(), "synthetic:%ld:%dx%d", &n, &w, &h) < 1 || n <= 0)
      throw std::invalid_argument(fmt::format("'{}': expected synthetic:COUNT[:WIDTHxHEIGHT]", spec));
    if (n > kMaxSyntheticSamples || w < 1 || h < 1 || w > 8192 || h > 8192)
      throw std::invalid_argument(fmt::format("'{}': COUNT must be in [1, {}] and WIDTH, HEIGHT in [1, 8192]", spec,
                                              kMaxSyntheticSamples));
    return synthetic_source(n, w, h);
  }
  if (fs::path(spec).extension() == ".safetensors") return pack_source(spec);
  if (fs::is_directory(spec)) return image_folder_source(spec, image_folder_classes(spec));  // "x.tar/" too
  if (is_shard_spec(spec)) return webdataset_source(spec);
  if (!fs::is_regular_file(spec))
    throw std::runtime_error(fmt::format("'{}': no such file; a data source is a .csv/.tsv file, WebDataset .tar "
                                         "shards (brace ranges and '::' allowed), a .safetensors tensor file (torchclip data pack), an "
                                         "ImageFolder tree or synthetic:COUNT",
                                         spec));
  return csv_source(spec, csv);
}

}  // namespace torchclip::data
