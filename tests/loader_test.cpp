#include "data/loader.h"
#include "data/prefetch.h"

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
  EXPECT_THROW(LoaderState::from_string("loader-v0 1 2"), std::runtime_error);
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

// The pieces the loader composes, used alone: read -> decode -> transform -> tokenize one
// sample, collate, and the failure policy.
TEST(Pipeline, PiecesComposeOutsideTheLoader) {
  Fixture f(4, {3});
  const SampleOptions so = SampleOptions().context_length(16).transform(opts(1, 1).transform());
  std::mt19937_64 rng(0);
  RawSample good;
  good.image_path = (f.dir / "img2.png").string();
  good.caption = "sample 2";
  good.origin = "row 3";
  good.label = 2;
  Sample s = process_sample(good, *tok(), so, rng);
  ASSERT_TRUE(s.ok) << s.reason << ": " << s.message;
  EXPECT_EQ(s.image.sizes(), (at::IntArrayRef{3, 8, 8}));
  EXPECT_NEAR(s.image[2][4][4].item<double>() * 255, 2, 1e-4);  // blue plane encodes the index
  EXPECT_EQ(s.ids, tok()->encode_padded("sample 2", 16));
  EXPECT_EQ(s.tokens, static_cast<int>(tok()->encode("sample 2").size()) + 2);
  EXPECT_EQ(s.width, 8);

  RawSample bad;
  bad.image_path = (f.dir / "img3.png").string();  // "<html>not an image</html>"
  bad.origin = "row 4";
  Sample b = process_sample(bad, *tok(), so, rng);
  EXPECT_FALSE(b.ok);
  EXPECT_EQ(b.reason, "not_an_image");
  RawSample missing;
  missing.image_path = (f.dir / "nope.png").string();
  EXPECT_EQ(process_sample(missing, *tok(), so, rng).reason, "image_missing");

  // Collate: rows in order, labels and captions aligned with their images.
  std::vector<Sample> batch = {s, s};
  batch[1].label = 7;
  batch[1].caption = "other";
  Batch out;
  collate(batch, out);
  EXPECT_EQ(out.images.sizes(), (at::IntArrayRef{2, 3, 8, 8}));
  EXPECT_EQ(out.texts.sizes(), (at::IntArrayRef{2, 16}));
  EXPECT_EQ(out.labels[1].item<int64_t>(), 7);
  EXPECT_EQ(out.captions[1], "other");
  EXPECT_TRUE(out.images[0].equal(s.image));
  EXPECT_FALSE(out.images.is_pinned());
  if (!at::hasCUDA()) {
    std::vector<Sample> again = {s};
    const std::string msg = test::error_of<c10::Error>([&] { collate(again, out, CollateOptions().pin_memory(true)); });
    EXPECT_NE(msg.find("pin_memory needs a CUDA"), std::string::npos) << msg;
  }
  std::vector<Sample> with_bad = {s, b};
  EXPECT_THROW(collate(with_bad, out), c10::Error);  // an unusable sample never reaches a batch

  // Failure policy: counted by reason, and too many in a row stop with the last one named.
  FailurePolicy policy(/*max_consecutive_failures=*/2, /*log_first_failures=*/0);
  LoaderStats stats;
  EXPECT_TRUE(policy.admit(s, stats));
  EXPECT_FALSE(policy.admit(b, stats));
  EXPECT_TRUE(policy.admit(s, stats));  // a good sample resets the run
  EXPECT_FALSE(policy.admit(b, stats));
  const std::string msg = test::error_of<std::runtime_error>([&] { policy.admit(b, stats); });
  EXPECT_NE(msg.find("2 samples in a row"), std::string::npos) << msg;
  EXPECT_NE(msg.find("row 4"), std::string::npos) << msg;
  EXPECT_EQ(stats.good, 2);
  EXPECT_EQ(stats.skipped, 3);
  EXPECT_EQ(stats.skipped_by_reason.at("not_an_image"), 3);
}

// Prefetching changes when batches are made, not which: the same batches and positions as the
// loader alone, a position taken mid-epoch resumes exactly, and the next epoch starts cleanly.
TEST(Pipeline, PrefetcherGivesTheLoadersBatchesAndPositions) {
  Fixture fx(100, {7});
  auto source = csv_source(fx.csv);
  Loader direct(source, tok(), opts(2, 8).log_first_failures(0));
  direct.start_epoch(0);
  std::vector<std::vector<int>> want;
  std::vector<std::string> want_states;
  for (Batch b; direct.next(b);) {
    std::vector<int> ids;
    for (int64_t r = 0; r < b.images.size(0); ++r) ids.push_back(index_of_caption(b, r));
    want.push_back(ids);
    want_states.push_back(direct.state().to_string());
  }
  ASSERT_EQ(want.size(), 12u);  // 99 usable samples, batches of 8, the last partial one dropped

  Loader loader(source, tok(), opts(2, 8).log_first_failures(0));
  loader.start_epoch(0);
  BatchPrefetcher prefetch(loader, /*depth=*/3);
  std::string mid;
  for (size_t i = 0;; ++i) {
    Batch b;
    if (!prefetch.next(b)) {
      EXPECT_EQ(i, want.size());
      break;
    }
    std::vector<int> ids;
    for (int64_t r = 0; r < b.images.size(0); ++r) {
      ids.push_back(index_of_caption(b, r));
      EXPECT_EQ(index_of_image(b, r), ids.back());  // still paired
    }
    ASSERT_LT(i, want.size());
    EXPECT_EQ(ids, want[i]) << "batch " << i;
    EXPECT_EQ(prefetch.state().to_string(), want_states[i]) << "batch " << i;
    if (i == 4) mid = prefetch.state().to_string();
  }
  // Resume from batch 4's position: batches 5.. again.
  prefetch.resume(LoaderState::from_string(mid));
  for (size_t i = 5; i < want.size(); ++i) {
    Batch b;
    ASSERT_TRUE(prefetch.next(b));
    EXPECT_EQ(index_of_caption(b, 0), want[i][0]) << "batch " << i;
  }
  prefetch.start_epoch(1);
  Batch b;
  EXPECT_TRUE(prefetch.next(b));
  EXPECT_EQ(prefetch.state().epoch, 1);
}

}  // namespace
}  // namespace torchclip::data
