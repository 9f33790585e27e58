// Feeding a GPU, tested on the CPU through the same code: uint8 batches normalised on the
// device give the worker's floats exactly, the streamed safetensors writer, the tensor-file
// source and `data pack`, and DeviceFeed (one batch ahead, positions, epochs, text trim).
#include "data/loader.h"
#include "data/pack.h"
#include "data/prefetch.h"
#include "io/safetensors.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <fstream>

#include "support.h"

namespace torchclip::data {
namespace {

std::shared_ptr<const Tokenizer> tok() {
  static auto t = load_tokenizer("clip-bpe");
  return t;
}

/// A CSV of `n` smooth-noise PNGs of w x h with captions of growing length and labels i % 3.
struct Images {
  std::filesystem::path dir;
  std::string csv;
  Images(int n, int w, int h, const std::string& name) : dir(test::temp_dir(name)) {
    csv = (dir / "d.csv").string();
    std::ofstream f(csv);
    f << "filepath,title,label\n";
    for (int i = 0; i < n; ++i) {
      cv::Mat m(h, w, CV_8UC3);
      cv::RNG rng(i + 1);
      rng.fill(m, cv::RNG::UNIFORM, 0, 255);
      cv::GaussianBlur(m, m, cv::Size(0, 0), 1.5);
      const std::string img = "img" + std::to_string(i) + ".png";
      cv::imwrite((dir / img).string(), m);
      std::string caption = "sample " + std::to_string(i);
      for (int k = 0; k < i % 5; ++k) caption += " with more words";
      f << img << ",\"" << caption << "\"," << i % 3 << "\n";
    }
  }
  ~Images() { std::filesystem::remove_all(dir); }
};

TEST(DeviceNormalize, Uint8ThenNormalizeImagesEqualsTheWorkersFloatsExactly) {
  cv::Mat bgr(37, 53, CV_8UC3);
  cv::RNG rng(3);
  rng.fill(bgr, cv::RNG::UNIFORM, 0, 255);
  for (bool train : {false, true}) {
    const auto o = ImageTransformOptions().image_size(24).train(train);
    std::mt19937_64 r1(9), r2(9);
    at::Tensor f = at::empty({3, 24, 24}, at::kFloat), u = at::empty({3, 24, 24}, at::kByte);
    transform_image(bgr, o, r1, f);
    transform_image(bgr, o, r2, u);
    const at::Tensor n = normalize_images(u.unsqueeze(0), o.mean(), o.std())[0];
    EXPECT_TRUE(at::equal(n, f)) << "train " << train << ": max diff " << (n - f).abs().max().item<double>();
    // And by hand for one pixel: (x / 255 - mean) / std.
    const double want = (u[1][5][7].item<double>() / 255 - o.mean()[1]) / o.std()[1];
    EXPECT_NEAR(f[1][5][7].item<double>(), want, 1e-6);
  }
  // The uint8 planes are RGB: channel 0 is OpenCV's third (red).
  at::Tensor u = at::empty({3, 53, 53}, at::kByte);
  std::mt19937_64 r(0);
  cv::Mat square = bgr(cv::Rect(0, 0, 37, 37)).clone();
  cv::resize(square, square, {53, 53}, 0, 0, cv::INTER_NEAREST);
  transform_image(square, ImageTransformOptions().image_size(53), r, u);  // 53x53 at 53: no resampling
  EXPECT_EQ(u[0][10][20].item<int>(), square.at<cv::Vec3b>(10, 20)[2]);
  EXPECT_EQ(u[2][10][20].item<int>(), square.at<cv::Vec3b>(10, 20)[0]);
  EXPECT_THROW(normalize_images(at::zeros({2, 3, 4, 4}), {0, 0, 0}, {1, 1, 1}), c10::Error);  // float input
}

TEST(SafetensorsWriter, StreamedFileReadsBackLikeSaveSafetensorsAndLeavesNoTemporary) {
  auto dir = test::temp_dir("stwriter");
  const at::Tensor a = at::arange(24, at::kByte).view({2, 3, 4}), b = at::arange(5, at::kLong) * 7;
  {
    SafetensorsWriter w((dir / "s.safetensors").string(), 256);
    w.begin("a", at::kByte);
    w.write(a.data_ptr(), 10);  // in two pieces
    w.write(static_cast<char*>(a.data_ptr()) + 10, 14);
    w.end({2, 3, 4});
    w.begin("b", at::kLong);
    w.write(b.data_ptr(), b.nbytes());
    EXPECT_THROW(w.end({6}), c10::Error);  // 40 bytes are not 6 int64
    w.end({5});
    w.finish({{"k", "v"}});
  }
  auto f = load_safetensors((dir / "s.safetensors").string());
  EXPECT_TRUE(at::equal(f.tensors.at("a"), a));
  EXPECT_TRUE(at::equal(f.tensors.at("b"), b));
  EXPECT_EQ(f.metadata.at("k"), "v");
  {
    SafetensorsWriter w((dir / "never.safetensors").string());
    w.begin("x", at::kByte);
    w.write("abc", 3);
  }  // destroyed before finish(): no file, no temporary
  int left = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) left += e.path().filename() != "s.safetensors";
  EXPECT_EQ(left, 0);
  std::filesystem::remove_all(dir);
}

TEST(Pack, TensorFileHoldsTheEvaluationPixelsCaptionsAndLabelsInOrder) {
  Images im(21, 40, 30, "pack");
  const std::string out = (im.dir / "p.safetensors").string();
  auto r = write_pack(csv_source(im.csv, CsvOptions().label_key("label")), tok(),
                      PackOptions().out(out).image_size(16).workers(2).progress(false));
  EXPECT_EQ(r.images, 21);
  EXPECT_EQ(r.skipped, 0);

  // Against the loader's own evaluation transform, uint8, read in order.
  Loader ref(csv_source(im.csv, CsvOptions().label_key("label")), tok(),
             LoaderOptions().batch_size(21).shuffle(false).drop_last(false).normalize(false).context_length(77)
                 .transform(ImageTransformOptions().image_size(16)));
  ref.start_epoch(0);
  Batch want;
  ASSERT_TRUE(ref.next(want));
  auto f = map_safetensors(out);
  EXPECT_EQ(f.metadata.at("format"), kPackFormat);
  EXPECT_EQ(f.metadata.at("image_size"), "16");
  EXPECT_TRUE(at::equal(f.tensors.at("images"), want.images.permute({0, 2, 3, 1})));  // [N, S, S, 3] RGB
  EXPECT_TRUE(at::equal(f.tensors.at("labels"), want.labels));

  // Read back as a source: same captions, labels and pixels; evaluation at the packed size is the identity.
  auto src = open_source(out);
  EXPECT_EQ(src->size(), 21);
  Loader back(src, tok(), LoaderOptions().batch_size(21).shuffle(false).drop_last(false).normalize(false).context_length(77)
                              .transform(ImageTransformOptions().image_size(16)));
  back.start_epoch(0);
  Batch got;
  ASSERT_TRUE(back.next(got));
  EXPECT_EQ(got.captions, want.captions);
  EXPECT_TRUE(at::equal(got.images, want.images));
  EXPECT_TRUE(at::equal(got.texts, want.texts));
  EXPECT_TRUE(at::equal(got.labels, want.labels));

  // Training crops from it (RandomResizedCrop + Pillow bicubic): deterministic, and a smaller size works.
  auto train = LoaderOptions().batch_size(7).seed(5).context_length(77).transform(ImageTransformOptions().image_size(12).train(true));
  Loader t1(src, tok(), train), t2(src, tok(), train);
  t1.start_epoch(0);
  t2.start_epoch(0);
  Batch x, y;
  ASSERT_TRUE(t1.next(x));
  ASSERT_TRUE(t2.next(y));
  EXPECT_EQ(x.images.sizes(), (std::vector<int64_t>{7, 3, 12, 12}));
  EXPECT_TRUE(at::equal(x.images, y.images));
}

TEST(Pack, FilesThatAreNotPacksAreRefusedNamingWhatIsMissing) {
  auto dir = test::temp_dir("notpack");
  const std::string plain = (dir / "plain.safetensors").string();
  save_safetensors(plain, {{"x", at::zeros({2})}});
  try {
    pack_source(plain);
    FAIL() << "accepted a file without the pack format";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("plain.safetensors: not a torchclip tensor file"), std::string::npos) << e.what();
  }
  const std::string bad = (dir / "bad.safetensors").string();
  save_safetensors(bad, {{"images", at::zeros({2, 4, 4, 3}, at::kByte)}, {"caption_bytes", at::zeros({3}, at::kByte)},
                         {"caption_offsets", at::tensor({0, 5, 3}, at::kLong)}, {"labels", at::zeros({2}, at::kLong)}},
                   {{"format", kPackFormat}});
  try {
    pack_source(bad);
    FAIL() << "accepted decreasing caption offsets";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("caption_offsets decrease"), std::string::npos) << e.what();
  }
  EXPECT_THROW(write_pack(csv_source((dir / "missing.csv").string()), tok(), PackOptions().out(dir / "o.safetensors")),
               std::runtime_error);
  std::filesystem::remove_all(dir);
}

TEST(DeviceFeed, GivesTheLoadersBatchesOneAheadWithPositionsEpochsAndTrim) {
  Images im(40, 20, 20, "feed");
  auto src = csv_source(im.csv);
  const auto base = LoaderOptions().batch_size(8).workers(2).seed(3).context_length(77).transform(ImageTransformOptions().image_size(16).train(true));
  Loader direct(src, tok(), base);
  direct.start_epoch(0);
  std::vector<Batch> want;
  std::vector<std::string> states;
  for (Batch b; direct.next(b);) {
    want.push_back(b);
    states.push_back(direct.state().to_string());
  }
  ASSERT_EQ(want.size(), 5u);

  Loader loader(src, tok(), LoaderOptions(base).normalize(false));  // uint8, normalised by the feed
  loader.start_epoch(0);
  DeviceFeed feed(loader, c10::Device(c10::kCPU), DeviceFeedOptions().trim_text(true));
  std::string mid;
  for (size_t i = 0; i < want.size(); ++i) {
    DeviceBatch b = feed.next();
    EXPECT_TRUE(at::equal(b.images, want[i].images)) << "batch " << i;
    const int64_t longest = *std::max_element(want[i].token_counts.begin(), want[i].token_counts.end());
    ASSERT_EQ(b.texts.size(1), longest) << "batch " << i;  // cut after the longest caption's end token
    EXPECT_TRUE(at::equal(b.texts, want[i].texts.slice(1, 0, longest)));
    EXPECT_TRUE(want[i].texts.slice(1, longest).eq(0).all().item<bool>());  // only padding was cut
    EXPECT_EQ(feed.state().to_string(), states[i]) << "batch " << i;  // not the batch fetched ahead
    EXPECT_EQ(b.epoch, 0);
    if (i == 2) mid = feed.state().to_string();
  }
  DeviceBatch next_epoch = feed.next();  // rolls over
  EXPECT_EQ(next_epoch.epoch, 1);
  EXPECT_EQ(feed.state().epoch, 1);

  // Resuming from batch 2's position gives batch 3 again.
  Loader again(src, tok(), LoaderOptions(base).normalize(false));
  again.resume(LoaderState::from_string(mid));
  DeviceFeed resumed(again, c10::Device(c10::kCPU), DeviceFeedOptions().ahead(0));
  EXPECT_TRUE(at::equal(resumed.next().images, want[3].images));

  // An epoch that can never form a batch is an error, not a loop.
  Loader starved(src, tok(), LoaderOptions(base).batch_size(64));
  starved.start_epoch(0);
  DeviceFeed empty(starved, c10::Device(c10::kCPU));
  try {
    empty.next();
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("yielded no batch of 64"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace torchclip::data
