#include "data/loader.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

#include <fstream>
#include <set>

#include "support.h"

namespace torchclip::data {
namespace {

/// A CSV dataset whose image i is a solid colour encoding i and whose caption is "sample i";
/// rows in `bad` get a broken image of each kind.
struct Fixture {
  std::filesystem::path dir;
  std::string csv;
  explicit Fixture(int n, std::set<int> bad = {}, const std::string& name = "loader") : dir(test::temp_dir(name)) {
    csv = (dir / "d.csv").string();
    std::ofstream f(csv);
    f << "filepath,title,label\n";
    for (int i = 0; i < n; ++i) {
      const std::string img = "img" + std::to_string(i) + ".png";
      if (bad.count(i)) {
        std::ofstream(dir / img) << (i % 2 ? "<html>not an image</html>" : "");
      } else {
        cv::Mat m(8, 8, CV_8UC3, cv::Scalar(i % 256, i / 256, 7));  // BGR
        cv::imwrite((dir / img).string(), m);
      }
      f << img << ",\"sample " << i << "\"," << i % 10 << "\n";
    }
  }
  ~Fixture() { std::filesystem::remove_all(dir); }
};

std::shared_ptr<const Tokenizer> tok() {
  static auto t = load_tokenizer("clip-bpe");
  return t;
}

LoaderOptions opts(int64_t workers, int64_t batch) {
  return LoaderOptions()
      .workers(workers)
      .batch_size(batch)
      .context_length(16)
      .seed(42)
      .transform(ImageTransformOptions().image_size(8).mean({0, 0, 0}).std({1, 1, 1}));
}

/// The sample index a batch row's pixels encode (blue = i % 256, green = i / 256; RGB planes).
int index_of_image(const Batch& b, int64_t row) {
  const double blue = b.images[row][2][4][4].item<double>() * 255, g = b.images[row][1][4][4].item<double>() * 255;
  return static_cast<int>(std::lround(blue) + 256 * std::lround(g));
}

int index_of_caption(const Batch& b, int64_t row) { return std::stoi(b.captions[row].substr(7)); }

std::vector<std::vector<int>> epoch_indices(Loader& loader, int64_t epoch) {
  loader.start_epoch(epoch);
  std::vector<std::vector<int>> out;
  for (Batch b; loader.next(b);) {
    std::vector<int> ids;
    for (int64_t r = 0; r < b.images.size(0); ++r) ids.push_back(index_of_caption(b, r));
    out.push_back(ids);
  }
  return out;
}

TEST(Loader, ImagesStayPairedWithTheirCaptions) {
  Fixture fx(300, {3, 4, 100, 101});
  Loader loader(csv_source(fx.csv, CsvOptions().label_key("label")), tok(),
                opts(3, 16).drop_last(false).log_first_failures(0));
  loader.start_epoch(0);
  std::set<int> seen;
  for (Batch b; loader.next(b);) {
    EXPECT_EQ(b.texts.sizes(), (at::IntArrayRef{b.images.size(0), 16}));
    for (int64_t r = 0; r < b.images.size(0); ++r) {
      const int i = index_of_caption(b, r);
      ASSERT_EQ(index_of_image(b, r), i) << "image and caption misaligned";
      EXPECT_EQ(b.labels[r].item<int64_t>(), i % 10);
      EXPECT_TRUE(seen.insert(i).second) << "sample " << i << " seen twice";
    }
  }
  EXPECT_EQ(seen.size(), 296u);
  EXPECT_EQ(loader.stats().good, 296);
  EXPECT_EQ(loader.stats().skipped, 4);
  EXPECT_EQ(loader.stats().skipped_by_reason.at("image_empty"), 2);
  EXPECT_EQ(loader.stats().skipped_by_reason.at("not_an_image"), 2);
}

TEST(Loader, SameSeedAndWorkersGiveTheSameBatchesAndEpochsDiffer) {
  Fixture fx(120);
  Loader a(csv_source(fx.csv), tok(), opts(2, 10)), b(csv_source(fx.csv), tok(), opts(2, 10));
  auto ea = epoch_indices(a, 0), eb = epoch_indices(b, 0);
  EXPECT_EQ(ea, eb);
  EXPECT_EQ(ea.size(), 12u);
  EXPECT_NE(epoch_indices(a, 1), ea);  // reshuffled per epoch
  // Augmentation randomness is reproducible too.
  auto train = opts(2, 10);
  train.transform().train(true).scale_min(0.3);
  Loader c(csv_source(fx.csv), tok(), train), d(csv_source(fx.csv), tok(), train);
  c.start_epoch(0);
  d.start_epoch(0);
  Batch bc, bd;
  ASSERT_TRUE(c.next(bc) && d.next(bd));
  EXPECT_TRUE(bc.images.equal(bd.images));
}

TEST(Loader, RanksReadDisjointSamplesThatCoverTheEpoch) {
  Fixture fx(101);
  std::set<int> all;
  size_t total = 0;
  for (int64_t rank = 0; rank < 3; ++rank) {
    Loader l(csv_source(fx.csv), tok(), opts(2, 7).drop_last(false).rank(rank).world_size(3));
    for (const auto& batch : epoch_indices(l, 0)) {
      for (int i : batch) all.insert(i), ++total;
    }
  }
  EXPECT_EQ(total, 101u);
  EXPECT_EQ(all.size(), 101u);
}

TEST(Loader, ResumeMidEpochContinuesExactly) {
  Fixture fx(90, {7});
  Loader straight(csv_source(fx.csv), tok(), opts(3, 8).log_first_failures(0));
  auto expected = epoch_indices(straight, 2);
  Loader first(csv_source(fx.csv), tok(), opts(3, 8).log_first_failures(0));
  first.start_epoch(2);
  Batch b;
  for (int k = 0; k < 4; ++k) ASSERT_TRUE(first.next(b));
  const std::string saved = first.state().to_string();
  Loader second(csv_source(fx.csv), tok(), opts(3, 8).log_first_failures(0));
  second.resume(LoaderState::from_string(saved));
  std::vector<std::vector<int>> rest;
  for (Batch c; second.next(c);) {
    std::vector<int> ids;
    for (int64_t r = 0; r < c.images.size(0); ++r) ids.push_back(index_of_caption(c, r));
    rest.push_back(ids);
  }
  EXPECT_EQ(rest, std::vector<std::vector<int>>(expected.begin() + 4, expected.end()));
  EXPECT_THROW(Loader(csv_source(fx.csv), tok(), opts(2, 8)).resume(LoaderState::from_string(saved)), c10::Error);
  EXPECT_THROW(LoaderState::from_string("loader-v0 1 2"), std::invalid_argument);
}

TEST(Loader, TooManyConsecutiveFailuresStopWithAClearError) {
  std::set<int> bad;
  for (int i = 10; i < 40; ++i) bad.insert(i);
  Fixture fx(60, bad);
  Loader loader(csv_source(fx.csv), tok(), opts(1, 4).shuffle(false).max_consecutive_failures(20).log_first_failures(0));
  loader.start_epoch(0);
  try {
    for (Batch b; loader.next(b);) {
    }
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("20 samples in a row"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("d.csv:"), std::string::npos) << e.what();
  }
}

TEST(Loader, CsvRowProblemsAreCountedNotFatal) {
  auto dir = test::temp_dir("csvbad");
  cv::imwrite((dir / "ok.png").string(), cv::Mat(8, 8, CV_8UC3, cv::Scalar(1, 2, 3)));
  std::ofstream(dir / "d.csv") << "filepath,title\nok.png,fine\nok.png\nok.png,\"  \"\nmissing.png,gone\nok.png,also fine\n";
  Loader loader(csv_source((dir / "d.csv").string()), tok(), opts(2, 2).drop_last(false).log_first_failures(0));
  loader.start_epoch(0);
  int rows = 0;
  for (Batch b; loader.next(b);) rows += static_cast<int>(b.images.size(0));
  EXPECT_EQ(rows, 2);
  const auto& by = loader.stats().skipped_by_reason;
  EXPECT_EQ(by.at("csv_too_few_columns"), 1);
  EXPECT_EQ(by.at("empty_caption"), 1);
  EXPECT_EQ(by.at("image_missing"), 1);
  EXPECT_NE(loader.stats().examples.at("csv_too_few_columns")[0].find("d.csv:3"), std::string::npos);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace torchclip::data
