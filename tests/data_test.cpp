#include "data/image.h"
#include "data/source.h"
#include "data/tar.h"
#include "data/transform.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

#include <fstream>
#include <sstream>

#include "support.h"

namespace torchclip::data {
namespace {

std::string fixture(const std::string& name) {
  std::ifstream f(TORCHCLIP_SOURCE_DIR "/tests/data/images/" + name, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// The pixel at (x, y) as (R, G, B): decode_image returns OpenCV's BGR order.
cv::Vec3b px(const cv::Mat& m, int x, int y) {
  const cv::Vec3b bgr = m.at<cv::Vec3b>(y, x);
  return {bgr[2], bgr[1], bgr[0]};
}

TEST(DecodeImage, EveryPixelFormatBecomes8BitColour) {
  auto rgb = decode_image(fixture("rgb.png"));
  ASSERT_EQ(rgb.type(), CV_8UC3);
  EXPECT_EQ(rgb.cols, 4);
  EXPECT_EQ(rgb.rows, 3);
  EXPECT_EQ(px(rgb, 0, 0), cv::Vec3b(200, 10, 20));
  EXPECT_EQ(px(rgb, 3, 2), cv::Vec3b(5, 40, 250));
  EXPECT_EQ(px(decode_image(fixture("rgb.webp")), 0, 1), cv::Vec3b(200, 10, 20));
  auto jpg = decode_image(fixture("rgb.jpg"));
  EXPECT_EQ(jpg.cols, 64);
  EXPECT_NEAR(px(jpg, 5, 5)[0], 200, 6);
  EXPECT_EQ(px(decode_image(fixture("grey.png")), 2, 2), cv::Vec3b(77, 77, 77));
  auto la = decode_image(fixture("grey_alpha.png"));
  EXPECT_EQ(px(la, 0, 0), cv::Vec3b(100, 100, 100));
  EXPECT_EQ(px(la, 1, 1), cv::Vec3b(255, 255, 255));  // transparent -> white
  auto rgba = decode_image(fixture("rgba.png"));
  EXPECT_EQ(px(rgba, 0, 0), cv::Vec3b(0, 0, 0));
  EXPECT_NEAR(px(rgba, 1, 0)[0], 255 * (1 - 128 / 255.0), 1);
  auto pal = decode_image(fixture("palette.png"));
  EXPECT_EQ(px(pal, 0, 0), cv::Vec3b(10, 20, 30));
  EXPECT_EQ(px(pal, 2, 0), cv::Vec3b(200, 100, 50));
  auto deep = decode_image(fixture("grey16.png"));
  EXPECT_EQ(px(deep, 0, 0), cv::Vec3b(40, 40, 40));
  EXPECT_EQ(px(deep, 1, 1), cv::Vec3b(255, 255, 255));
}

std::string reason_of(const std::string& bytes, int64_t max_pixels = 89478485) {
  try {
    decode_image(bytes, max_pixels);
  } catch (const SampleError& e) {
    return e.reason;
  }
  return "decoded";
}

TEST(DecodeImage, BadFilesAreRefusedWithAReason) {
  EXPECT_EQ(reason_of(fixture("empty.jpg")), "image_empty");
  EXPECT_EQ(reason_of(fixture("page.jpg")), "not_an_image");
  EXPECT_EQ(reason_of(fixture("truncated.jpg")), "image_truncated");
  EXPECT_EQ(reason_of(fixture("truncated.png")), "image_corrupt");
  EXPECT_EQ(reason_of(fixture("bomb.png")), "image_too_large");
  EXPECT_EQ(reason_of(fixture("rgb.png"), 11), "image_too_large");  // 4x3 = 12 pixels > 11
}

TEST(ProbeImage, ReadsSizesFromHeaders) {
  EXPECT_EQ(probe_image(fixture("rgb.jpg"))->width, 64);
  EXPECT_EQ(probe_image(fixture("rgb.jpg"))->height, 48);
  EXPECT_EQ(probe_image(fixture("rgb.webp"))->width, 4);
  EXPECT_EQ(probe_image(fixture("bomb.png"))->height, 100000);
  EXPECT_FALSE(probe_image("GIF89a....").has_value());
}

TEST(Transform, EvalResizesShortSideAndCropsTheCentre) {
  // 40x20 landscape (BGR): left quarter black, middle half grey 128, right quarter white.
  cv::Mat img(20, 40, CV_8UC3, cv::Scalar(128, 128, 128));
  img(cv::Rect(0, 0, 10, 20)).setTo(cv::Scalar(0, 0, 0));
  img(cv::Rect(30, 0, 10, 20)).setTo(cv::Scalar(255, 255, 255));
  std::mt19937_64 rng(0);
  auto out = at::empty({3, 10, 10});
  for (auto mode : {ResizeMode::kPil, ResizeMode::kFast}) {
    auto o = ImageTransformOptions().image_size(10).mean({0, 0, 0}).std({1, 1, 1}).resize(mode);
    transform_image(img, o, rng, out);  // resized to 20x10, centre 10x10 = the grey half
    // Pillow's bicubic shrinking by 2 reaches 2 output pixels into the black and white quarters;
    // the middle columns are grey in both modes.
    const int64_t edge = mode == ResizeMode::kPil ? 2 : 0;
    EXPECT_TRUE(test::all_close(out.slice(2, edge, 10 - edge), at::full({3, 10, 10 - 2 * edge}, 128 / 255.0), 1e-6))
        << enum_name(mode);
  }
  auto n = ImageTransformOptions().image_size(10);  // OpenAI mean/std
  transform_image(img, n, rng, out);
  EXPECT_NEAR(out[0][5][5].item<double>(), (128 / 255.0 - 0.48145466) / 0.26862954, 1e-5);
  EXPECT_NEAR(out[2][5][5].item<double>(), (128 / 255.0 - 0.40821073) / 0.27577711, 1e-5);
  // Channel order: a BGR (10, 20, 30) pixel becomes RGB planes (30, 20, 10).
  cv::Mat coloured(4, 4, CV_8UC3, cv::Scalar(10, 20, 30));
  auto small = at::empty({3, 4, 4});
  transform_image(coloured, ImageTransformOptions().image_size(4).mean({0, 0, 0}).std({1, 1, 1}), rng, small);
  EXPECT_NEAR(small[0][1][1].item<double>(), 30 / 255.0, 1e-6);
  EXPECT_NEAR(small[2][1][1].item<double>(), 10 / 255.0, 1e-6);
}

TEST(Transform, PilBicubicKeepsFlatImagesFlatAndOvershootsEdges) {
  // Normalised weights: a flat image stays flat at every scale, with 1 to 4 channels.
  for (int channels = 1; channels <= 4; ++channels) {
    cv::Mat flat(37, 53, CV_8UC(channels), cv::Scalar::all(77));
    for (auto [w, h] : {std::pair{10, 7}, {53, 90}, {200, 5}}) {
      cv::Mat r = resize_pil_bicubic(flat, w, h);
      ASSERT_EQ(r.cols, w);
      ASSERT_EQ(r.rows, h);
      ASSERT_EQ(r.channels(), channels);
      double lo = 0, hi = 0;
      cv::minMaxLoc(r.reshape(1), &lo, &hi);
      EXPECT_EQ(lo, 77);
      EXPECT_EQ(hi, 77);
    }
  }
  // A step from 50 to 200, enlarged 4x: Keys' cubic (a = -0.5) rings below 50 and above 200
  // next to the step, and the result is clamped to 0..255 (byte-exact parity with Pillow is
  // the golden test's job, on real photos).
  cv::Mat step(1, 8, CV_8UC1, cv::Scalar(50));
  step(cv::Rect(4, 0, 4, 1)).setTo(200);
  cv::Mat up = resize_pil_bicubic(step, 32, 1);
  double lo = 0, hi = 0;
  cv::minMaxLoc(up, &lo, &hi);
  EXPECT_LT(lo, 50);
  EXPECT_GT(hi, 200);
  EXPECT_EQ(up.at<uint8_t>(0, 0), 50);
  EXPECT_EQ(up.at<uint8_t>(0, 31), 200);
  EXPECT_THROW(parse_enum<ResizeMode>("lanczos", "data.resize"), std::invalid_argument);
}

TEST(Transform, RandomResizedCropStaysInBoundsAndScaleRange) {
  std::mt19937_64 rng(1);
  auto o = ImageTransformOptions().scale_min(0.9).scale_max(1.0);
  for (int i = 0; i < 500; ++i) {
    CropBox b = random_resized_crop_box(300, 400, o, rng);
    ASSERT_GE(b.top, 0);
    ASSERT_GE(b.left, 0);
    ASSERT_LE(b.top + b.height, 300);
    ASSERT_LE(b.left + b.width, 400);
    const double area = static_cast<double>(b.height) * b.width / (300.0 * 400.0);
    const double ratio = static_cast<double>(b.width) / b.height;
    // Either a sampled crop (scale in range up to rounding, ratio in range) or the fallback.
    EXPECT_GE(area, 0.88);
    EXPECT_LE(ratio, 4.0 / 3.0 + 0.02);
    EXPECT_GE(ratio, 0.75 - 0.02);
  }
  // Fallback for an extreme aspect ratio: centre crop clamped to ratio 4/3.
  CropBox f = random_resized_crop_box(10, 1000, o, rng);
  EXPECT_EQ(f.height, 10);
  EXPECT_EQ(f.width, 13);
  EXPECT_EQ(f.left, (1000 - 13) / 2);
}

TEST(Csv, QuotingSeparatorsAndLineBreaks) {
  auto rows = parse_csv("filepath,title\na.png,\"a cat, sitting\"\nb.png,\"say \"\"hi\"\"\"\nc.png,\"two\nlines\"\nd.png\n", ',');
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_EQ(rows[1].fields[1], "a cat, sitting");
  EXPECT_EQ(rows[2].fields[1], "say \"hi\"");
  EXPECT_EQ(rows[3].fields[1], "two\nlines");
  EXPECT_EQ(rows[4].line, 6);  // line numbers count the embedded line break
  EXPECT_EQ(rows[4].fields.size(), 1u);
}

TEST(Csv, MissingColumnNamesFileAndHeader) {
  auto dir = test::temp_dir("csvcol");
  std::ofstream(dir / "d.csv") << "path,caption\na.png,x\n";
  try {
    csv_source((dir / "d.csv").string());
    FAIL();
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("d.csv:1: no column 'filepath'"), std::string::npos) << m;
    EXPECT_NE(m.find("path, caption"), std::string::npos) << m;
  }
  EXPECT_NO_THROW(csv_source((dir / "d.csv").string(), CsvOptions().img_key("path").caption_key("caption")));
  std::filesystem::remove_all(dir);
}

TEST(Csv, AByteOrderMarkIsStrippedAndATabSeparatedCsvIsSniffed) {
  auto dir = test::temp_dir("csvsniff");
  std::ofstream(dir / "d.csv") << "\xEF\xBB\xBF" << "filepath\ttitle\na.png\ta caption, with a comma\n";
  auto src = csv_source((dir / "d.csv").string());  // was: "no column 'filepath'"
  EXPECT_NE(src->describe().find("tab-separated"), std::string::npos) << src->describe();
  StreamSpec spec;
  spec.shuffle = false;
  auto stream = src->open(spec);
  RawSample r;
  ASSERT_TRUE(stream->next(r));
  EXPECT_EQ(r.caption, "a caption, with a comma");
  EXPECT_EQ(std::filesystem::path(r.image_path).filename(), "a.png");
  std::ofstream(dir / "c.tsv") << "filepath,title\nb.png,x\n";  // commas only: commas, whatever the extension
  EXPECT_NE(csv_source((dir / "c.tsv").string())->describe().find(",-separated"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(Sources, AFolderWhoseNameHasTarIsAnImageFolderNotShards) {
  EXPECT_TRUE(is_shard_spec("s-{000..009}.tar"));
  EXPECT_TRUE(is_shard_spec("a.tar::b/c-{0..1}.tar"));
  EXPECT_FALSE(is_shard_spec("photos.tar.d"));
  EXPECT_FALSE(is_shard_spec("a.tar::b.csv"));
  auto dir = test::temp_dir("tarfolder");
  std::filesystem::create_directories(dir / "x.tar" / "cat");
  std::filesystem::copy_file(std::string(TORCHCLIP_SOURCE_DIR) + "/tests/data/images/rgb.png", dir / "x.tar" / "cat" / "1.png");
  auto src = open_source((dir / "x.tar").string());
  EXPECT_NE(src->describe().find("image folder"), std::string::npos) << src->describe();
  EXPECT_EQ(src->size(), 1);
  std::filesystem::remove_all(dir);
}

TEST(Shards, BraceExpansionAndSources) {
  EXPECT_EQ(expand_shards("s-{008..011}.tar"),
            (std::vector<std::string>{"s-008.tar", "s-009.tar", "s-010.tar", "s-011.tar"}));
  EXPECT_EQ(expand_shards("a{0..1}-{5..6}.tar::b.tar"),
            (std::vector<std::string>{"a0-5.tar", "a0-6.tar", "a1-5.tar", "a1-6.tar", "b.tar"}));
  EXPECT_THROW(expand_shards("x-{a..b}.tar"), std::invalid_argument);
}

std::vector<RawSample> read_all(const SampleSource& src, StreamSpec spec = {}) {
  spec.shuffle = false;
  auto stream = src.open(spec);
  std::vector<RawSample> out;
  for (RawSample r; stream->next(r);) out.push_back(r);
  return out;
}

TEST(Shards, TarMembersGroupIntoSamplesAndProblemsAreNamed) {
  auto dir = test::temp_dir("tar");
  const std::string png = fixture("rgb.png");
  {
    TarWriter t((dir / "s-0.tar").string());
    t.add("a/000.jpg", png);
    t.add("a/000.txt", "first caption");
    t.add("a/000.cls", "3");
    t.add("a/001.png", png);  // no caption
    t.add("a/002.txt", "caption without image");
    t.add("a/003.PNG", png);
    t.add("a/003.txt", "upper-case extension");
    t.close();
  }
  {
    TarWriter t((dir / "s-1.tar").string());
    t.add("b.jpg", png);
    t.add("b.txt", "in the truncated shard");
    t.add("c.jpg", std::string(5000, 'x'));
    t.close();
  }
  std::filesystem::resize_file(dir / "s-1.tar", 2000);  // cut inside c.jpg
  auto src = webdataset_source((dir / "s-{0..1}.tar").string());
  auto all = read_all(*src);
  ASSERT_EQ(all.size(), 6u);
  EXPECT_EQ(all[0].caption, "first caption");
  EXPECT_EQ(all[0].label, 3);
  EXPECT_EQ(all[0].image_bytes, png);
  EXPECT_EQ(all[1].error_reason, "tar_no_caption");
  EXPECT_NE(all[1].origin.find("a/001"), std::string::npos);
  EXPECT_EQ(all[2].error_reason, "tar_no_image");
  EXPECT_TRUE(all[3].error_reason.empty());
  EXPECT_TRUE(all[4].error_reason.empty());  // b: image and caption arrived before the cut
  EXPECT_EQ(all[4].caption, "in the truncated shard");
  EXPECT_EQ(all[5].error_reason, "tar_truncated");  // c is lost with the rest of the shard
  // Worker split: disjoint shards, same samples in total.
  StreamSpec w0, w1;
  w0.workers = w1.workers = 2;
  w1.worker = 1;
  EXPECT_EQ(read_all(*src, w0).size() + read_all(*src, w1).size(), 6u);
  std::filesystem::remove_all(dir);
}

TEST(Shards, EmptyCaptionsAndMembersWithoutAKeyAreCountedNotUsed) {
  auto dir = test::temp_dir("tarempty");
  const std::string png = fixture("rgb.png");
  {
    TarWriter t((dir / "s.tar").string());
    t.add("a.jpg", png);
    t.add("a.txt", " \n");  // empty caption: refused as CSV refuses it
    t.add(".txt", "no key");  // was dropped without a count
    t.add("b.jpg", png);
    t.add("b.txt", "fine");
    t.close();
  }
  auto all = read_all(*webdataset_source((dir / "s.tar").string()));
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].error_reason, "empty_caption");
  EXPECT_EQ(all[1].error_reason, "tar_empty_key");
  EXPECT_TRUE(all[2].error_reason.empty());
  EXPECT_EQ(all[2].caption, "fine");
  std::filesystem::remove_all(dir);
}

TEST(Shards, RanksAndWorkersReadEveryShardOnceAcrossTheJob) {
  auto dir = test::temp_dir("tar_ranks");
  const std::string png = fixture("rgb.png");
  for (int s = 0; s < 6; ++s) {
    TarWriter t((dir / ("s-" + std::to_string(s) + ".tar")).string());
    for (int i = 0; i < 3; ++i) {
      const std::string key = "k" + std::to_string(s) + "_" + std::to_string(i);
      t.add(key + ".png", png);
      t.add(key + ".txt", key);
    }
    t.close();
  }
  auto src = webdataset_source((dir / "s-{0..5}.tar").string());
  for (int64_t epoch : {0, 1}) {
    std::multiset<std::string> seen;
    for (int64_t rank = 0; rank < 2; ++rank)
      for (int64_t worker = 0; worker < 2; ++worker) {
        StreamSpec spec;
        spec.epoch = epoch;
        spec.rank = rank;
        spec.world_size = 2;
        spec.worker = worker;
        spec.workers = 2;
        spec.shuffle_buffer = 1;
        for (const auto& r : read_all(*src, spec)) seen.insert(r.caption);
      }
    EXPECT_EQ(seen.size(), 18u) << "epoch " << epoch;
    EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 18u) << "epoch " << epoch;  // each once
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace torchclip::data
