#include "bench/bench_data.h"
#include "bench/stats.h"

#include "data/loader.h"
#include "io/fsutil.h"
#include "util/json.h"
#include "util/progress.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#if TORCHCLIP_HAVE_OPENCV
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <unistd.h>

namespace torchclip {
namespace fs = std::filesystem;

namespace {

/// Writes `n` photo-like JPEGs (smoothed noise, distinct per image) and a CSV listing them.
std::string write_images(const fs::path& dir, const BenchDataOptions& o) {
  fs::create_directories(dir);
  const std::string csv = (dir / "bench.csv").string();
  std::ofstream f(csv);
  f << "filepath,title\n";
  Progress bar("writing test images", o.images(), "img");
  for (int64_t i = 0; i < o.images(); ++i) {
    const std::string name = fmt::format("{:06d}.jpg", i);
    if (!fs::exists(dir / name)) {
      data::require_image_decoders("bench data (JPEG test images)");
#if TORCHCLIP_HAVE_OPENCV
      cv::Mat img(o.height(), o.width(), CV_8UC3);
      cv::RNG rng(static_cast<uint64_t>(i) + 1);
      rng.fill(img, cv::RNG::UNIFORM, 0, 255);
      cv::GaussianBlur(img, img, cv::Size(0, 0), 4.0);
      cv::imwrite((dir / name).string(), img, {cv::IMWRITE_JPEG_QUALITY, o.quality()});
#endif
    }
    f << name << ",\"a photo of test image number " << i << "\"\n";
    bar.advance();
  }
  bar.finish();
  return csv;
}

}  // namespace

BenchDataResult bench_data(const BenchDataOptions& o) {
  const bool temp = o.dir().empty() && o.data().empty();
  const fs::path dir = temp ? fs::temp_directory_path() / fmt::format("torchclip_bench_data_{}", ::getpid()) : fs::path(o.dir());
  const std::string csv = o.data().empty() ? write_images(dir, o) : o.data();
  BenchDataResult r;
  r.workers = o.workers();
  r.resize = enum_name(o.resize());

  auto loader_options = data::LoaderOptions()
                            .batch_size(o.batch())
                            .workers(o.workers())
                            .drop_last(false)
                            .transform(data::ImageTransformOptions().image_size(o.image_size()).train(true).resize(
                                o.resize()));
  TORCH_CHECK(o.rounds() >= 1 && o.rounds() <= 100, "bench data: --rounds must be in [1, 100], got ", o.rounds());
  data::Loader loader(data::csv_source(csv), load_tokenizer("clip-bpe"), loader_options);
  loader.start_epoch(0);  // warm the page cache and the tokenizer, as the Python side reads after us
  for (data::Batch b; loader.next(b);) {
  }
  std::vector<double> ours_seconds, openclip_seconds;
  for (int64_t round = 0; round < o.rounds(); ++round) {
    const auto t0 = std::chrono::steady_clock::now();
    loader.start_epoch(round + 1);
    int64_t n = 0;
    Progress bar("torchclip loader", 0, "img");
    for (data::Batch b; loader.next(b);) {
      n += b.images.size(0);
      bar.advance(b.images.size(0));
    }
    bar.finish();
    r.images = n;
    ours_seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    r.ours_rounds.push_back(n / ours_seconds.back());
    if (!o.compare() || !r.openclip_note.empty()) continue;
    const std::string script = TORCHCLIP_SOURCE_DIR "/scripts/bench_openclip_data.py";
    const std::string cmd = fmt::format("{} {} --csv {} --workers {} --batch {} --size {} 2>&1", o.python(), script, csv,
                                        o.workers(), o.batch(), o.image_size());
    fmt::print(stderr, "open_clip pipeline: {}\n", cmd);
    int status = 0;
    const std::string out = run_command(cmd, status);
    const size_t brace = out.rfind("{\"images\"");
    if (status != 0 || brace == std::string::npos) {
      r.openclip_note = fmt::format("open_clip's pipeline did not run (exit {}): {}", status, out.substr(0, 400));
      r.openclip_rounds.clear();
    } else {
      r.openclip_rounds.push_back(json_number(out.substr(brace), "images_per_second"));
      openclip_seconds.push_back(json_number(out.substr(brace), "seconds"));
    }
  }
  r.ours_images_per_second = median_of(r.ours_rounds);
  r.ours_seconds = median_of(ours_seconds);
  r.openclip_images_per_second = median_of(r.openclip_rounds);
  r.openclip_seconds = median_of(openclip_seconds);
  if (temp) fs::remove_all(dir);
  return r;
}

double BenchDataResult::ratio() const { return median_ratio(ours_rounds, openclip_rounds); }

std::string BenchDataResult::to_json() const {
  return fmt::format(
      "{{\"images\": {}, \"workers\": {}, \"resize\": \"{}\", \"torchclip_images_per_second\": {:.2f}, \"torchclip_seconds\": {:.3f}, "
      "\"openclip_images_per_second\": {:.2f}, \"openclip_seconds\": {:.3f}, \"ratio\": {:.3f}, \"rounds\": {}, "
      "\"torchclip_rounds\": [{:.2f}], \"openclip_rounds\": [{:.2f}], \"note\": {}}}",
      images, workers, resize, ours_images_per_second, ours_seconds, openclip_images_per_second, openclip_seconds, ratio(),
      ours_rounds.size(), fmt::join(ours_rounds, ", "), fmt::join(openclip_rounds, ", "), json_quote(openclip_note));
}

std::string BenchDataResult::to_text() const {
  std::string s = fmt::format("data pipeline, {} JPEGs, {} workers, {} resize (decode + RandomResizedCrop + normalise + tokenise + batch)\n",
                              images, workers, resize);
  s += fmt::format("  torchclip   {:>9.1f} images/s  ({:.2f} s)\n", ours_images_per_second, ours_seconds);
  if (openclip_images_per_second > 0) {
    s += fmt::format("  open_clip   {:>9.1f} images/s  ({:.2f} s)\n", openclip_images_per_second, openclip_seconds);
    s += fmt::format("  ratio       {:>9.2f}x{}\n", ratio(),
                     ours_rounds.size() > 1 ? fmt::format("  (median of {} alternating rounds)", ours_rounds.size()) : "");
  } else {
    s += "  open_clip   not measured: " + openclip_note + "\n";
  }
  return s;
}

}  // namespace torchclip
