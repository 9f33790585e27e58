#include "data/prepare.h"

#include "data/tar.h"
#include "data/transform.h"

#include <fmt/format.h>
#if TORCHCLIP_HAVE_OPENCV
#include <opencv2/imgcodecs.hpp>
#endif
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>

namespace torchclip::data {
namespace fs = std::filesystem;

const std::vector<std::string>& fashion_mnist_classes() {
  static const std::vector<std::string> names = {"t-shirt", "trouser", "pullover", "dress",   "coat",
                                                 "sandal",  "shirt",   "sneaker",  "bag",     "ankle boot"};
  return names;
}

const std::vector<std::string>& fashion_mnist_train_templates() {
  static const std::vector<std::string> t = {
      "a photo of a {}.", "a {}.", "{}", "a grayscale photo of a {}.", "a product photo of a {}.",
      "a {} on a black background.", "a small picture of a {}.", "an item of clothing: a {}.",
      "a catalogue image of a {}.", "a centered photo of the {}.", "this is a {}.", "a black and white {}.",
      "a tiny image of a {}.", "a {}, photographed from the front.", "a fashion item, a {}.",
      "the {} in a 28 by 28 picture."};
  return t;
}

const std::vector<std::string>& fashion_mnist_eval_templates() {
  static const std::vector<std::string> t = {"a picture of a {}.", "an image of the {}.", "a low resolution photo of a {}.",
                                             "a photo of one {}."};
  return t;
}

std::vector<uint8_t> read_idx(const std::string& path, std::vector<int64_t>& dims) {
  gzFile f = gzopen(path.c_str(), "rb");  // reads plain files too
  if (!f) throw std::runtime_error(fmt::format("{}: cannot open the IDX file", path));
  std::vector<uint8_t> data;
  unsigned char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) data.insert(data.end(), buf, buf + n);
  gzclose(f);
  if (data.size() < 4 || data[0] != 0 || data[1] != 0 || data[2] != 0x08) {
    throw std::runtime_error(fmt::format("{}: not an IDX file of unsigned bytes (bad magic number)", path));
  }
  const int ndim = data[3];
  dims.clear();
  size_t count = 1;
  for (int d = 0; d < ndim; ++d) {
    const size_t o = 4 + 4 * d;
    if (o + 4 > data.size()) throw std::runtime_error(fmt::format("{}: truncated IDX header", path));
    dims.push_back((int64_t(data[o]) << 24) | (int64_t(data[o + 1]) << 16) | (int64_t(data[o + 2]) << 8) | data[o + 3]);
    count *= static_cast<size_t>(dims.back());
  }
  const size_t header = 4 + 4 * static_cast<size_t>(ndim);
  if (data.size() != header + count) {
    throw std::runtime_error(fmt::format("{}: expected {} bytes of data after the header, found {}", path, count,
                                         data.size() - header));
  }
  return {data.begin() + static_cast<std::ptrdiff_t>(header), data.end()};
}

namespace {

std::string csv_quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string fill(const std::string& tmpl, const std::string& name) {
  const size_t p = tmpl.find("{}");
  std::string before = tmpl.substr(0, p);
  // "a ankle boot" -> "an ankle boot"
  const bool article = before == "a " || (before.size() >= 3 && before.compare(before.size() - 3, 3, " a ") == 0);
  if (article && std::string("aeiou").find(name[0]) != std::string::npos) before.insert(before.size() - 1, "n");
  return before + name + tmpl.substr(p + 2);
}

void write_lines(const fs::path& path, const std::vector<std::string>& lines) {
  std::ofstream f(path);
  for (const auto& l : lines) f << l << "\n";
  if (!f) throw std::runtime_error(fmt::format("{}: write failed", path.string()));
}

}  // namespace

PrepareResult prepare_fashion_mnist(const PrepareFashionMnistOptions& o) {
  require_image_decoders("prepare fashion-mnist (PNG encoding)");
  if (o.format() != "csv" && o.format() != "wds")
    throw std::invalid_argument(fmt::format("--format must be csv or wds, got '{}'", o.format()));
  const fs::path out(o.out());
  PrepareResult result;
  std::mt19937_64 rng(o.seed());
  const auto& classes = fashion_mnist_classes();
  for (const std::string split : {"train", "test"}) {
    const std::string prefix = split == "train" ? "train" : "t10k";
    std::vector<int64_t> idims, ldims;
    auto images = read_idx((fs::path(o.source()) / (prefix + "-images-idx3-ubyte.gz")).string(), idims);
    auto labels = read_idx((fs::path(o.source()) / (prefix + "-labels-idx1-ubyte.gz")).string(), ldims);
    if (idims.size() != 3 || ldims.size() != 1 || idims[0] != ldims[0])
      throw std::runtime_error(fmt::format("{}: image and label files disagree on the number of items", o.source()));
    const int64_t n = idims[0], H = idims[1], W = idims[2];
    fs::create_directories(out / "images" / split);
    const auto& templates = split == "train" ? fashion_mnist_train_templates() : fashion_mnist_eval_templates();
    std::ofstream csv(out / (split + ".csv"));
    csv << "filepath,title,label\n";
    std::unique_ptr<TarWriter> shard;
    for (int64_t i = 0; i < n; ++i) {
      const int label = labels[i];
      if (label < 0 || label >= static_cast<int>(classes.size()))
        throw std::runtime_error(fmt::format("{}: label {} of item {} is not in 0..9", o.source(), label, i));
      std::vector<unsigned char> png;
#if TORCHCLIP_HAVE_OPENCV
      cv::Mat img(static_cast<int>(H), static_cast<int>(W), CV_8UC1, images.data() + i * H * W);
      cv::imencode(".png", img, png);
#else
      (void)H, (void)W;  // refused at the top: no PNG encoder in this build
#endif
      const std::string rel = fmt::format("images/{}/{:05d}.png", split, i);
      std::ofstream(out / rel, std::ios::binary).write(reinterpret_cast<const char*>(png.data()), png.size());
      const std::string caption = fill(templates[rng() % templates.size()], classes[label]);
      csv << rel << "," << csv_quote(caption) << "," << label << "\n";
      if (o.format() == "wds") {
        if (i % o.shard_size() == 0) {
          if (shard) shard->close();
          fs::create_directories(out / "shards");
          const std::string name = fmt::format("shards/{}-{:06d}.tar", split, i / o.shard_size());
          shard = std::make_unique<TarWriter>((out / name).string());
          result.files.push_back((out / name).string());
        }
        const std::string key = fmt::format("{:05d}", i);
        shard->add(key + ".png", std::string(png.begin(), png.end()));
        shard->add(key + ".txt", caption);
        shard->add(key + ".cls", std::to_string(label));
      }
    }
    if (shard) shard->close();
    if (!csv) throw std::runtime_error(fmt::format("{}: write failed", (out / (split + ".csv")).string()));
    (split == "train" ? result.train : result.test) = n;
    result.files.push_back((out / (split + ".csv")).string());
  }
  write_lines(out / "classes.txt", classes);
  write_lines(out / "templates_train.txt", fashion_mnist_train_templates());
  write_lines(out / "templates_eval.txt", fashion_mnist_eval_templates());
  for (const char* f : {"classes.txt", "templates_train.txt", "templates_eval.txt"}) result.files.push_back((out / f).string());
  return result;
}

}  // namespace torchclip::data
