#include "config/emit.h"
#include "config/train_config.h"
#include "eval/evaluate.h"
#include "eval/retrieval.h"
#include "eval/zeroshot.h"
#include "optim/schedule.h"
#include "search/index.h"
#include "train/step.h"
#include "train/trainer.h"
#include "util/args.h"
#include "util/device.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "support.h"

namespace torchclip {
namespace {

TEST(Schedule, WarmupCosineConstAndCooldownByHand) {
  ScheduleCfg s = ScheduleCfg().name(ScheduleKind::kCosine).warmup_steps(10);
  EXPECT_DOUBLE_EQ(learning_rate(s, 1.0, 0, 110), 0.1);  // base * (step + 1) / warmup
  EXPECT_DOUBLE_EQ(learning_rate(s, 1.0, 9, 110), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(s, 1.0, 10, 110), 1.0);                  // cos(0)
  EXPECT_NEAR(learning_rate(s, 1.0, 60, 110), 0.5, 1e-12);                // half way: 0.5 (1 + cos(pi/2))
  EXPECT_NEAR(learning_rate(s, 1.0, 109, 110), 0.5 * (1 + std::cos(M_PI * 99 / 100)), 1e-12);
  EXPECT_DOUBLE_EQ(learning_rate(ScheduleCfg().name(ScheduleKind::kConst).warmup_steps(0), 0.3, 50, 100), 0.3);
  ScheduleCfg c = ScheduleCfg().name(ScheduleKind::kConstCooldown).warmup_steps(0).cooldown_steps(20).min_lr(0.1);
  EXPECT_DOUBLE_EQ(learning_rate(c, 1.0, 79, 100), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(c, 1.0, 80, 100), 1.0);
  EXPECT_NEAR(learning_rate(c, 1.0, 90, 100), 0.55, 1e-12);
}


struct Cfg {
  explicit Cfg(const std::string& name = "traincfg") : dir(test::temp_dir(name)) {}
  std::filesystem::path dir;
  std::string path(const std::string& yaml) {
    auto p = (dir / "t.yaml").string();
    std::ofstream(p) << yaml;
    return p;
  }
  ~Cfg() { std::filesystem::remove_all(dir); }
};

std::string error_of(const std::function<void()>& fn) { return test::error_of<ConfigError>(fn); }

TEST(TrainConfig, ParsesOverridesAndRoundTripsTheEffectiveConfig) {
  Cfg c;
  auto p = c.path("model: tiny\ndata:\n  train: x.csv\n  batch_size: 32\noptim:\n  lr: 1.0e-3\ntrain:\n  steps: 10\n");
  auto cfg = load_train_config(p, {"optim.lr=5e-4", "train.precision=bf16", "data.scale=[0.5, 1.0]", "loss.name=infonce",
                                   "loss.temperature=0.05", "model=tiny", "data.resize=fast"});
  EXPECT_DOUBLE_EQ(cfg.optim().lr(), 5e-4);
  EXPECT_EQ(cfg.train().precision(), Precision::kBf16);
  EXPECT_DOUBLE_EQ(cfg.data().scale()[0], 0.5);
  EXPECT_EQ(cfg.model().vision_cfg().image_size(), 28);
  EXPECT_EQ(cfg.data().batch_size(), 32);
  EXPECT_EQ(cfg.data().resize(), ResizeMode::kFast);
  EXPECT_EQ(cfg.loss().name(), "infonce");
  EXPECT_EQ(*std::get<InfoNCELossOptions>(cfg.loss().options()).temperature(), 0.05);
  // The effective config is itself a valid config that gives the same effective config (after
  // its first line, which names the file it came from).
  Cfg again("traincfg2");
  const std::string first = to_yaml(cfg);
  const std::string second = to_yaml(load_train_config(again.path(first)));
  EXPECT_EQ(second.substr(second.find('\n')), first.substr(first.find('\n')));
}

TEST(TrainConfig, ErrorsNameFileKeyAndChoices) {
  Cfg c;
  auto p = c.path("model: tiny\ndata:\n  train: x.csv\n  batchsize: 3\n");
  auto m = error_of([&] { load_train_config(p); });
  EXPECT_NE(m.find("t.yaml:4"), std::string::npos) << m;
  EXPECT_NE(m.find("data.batchsize"), std::string::npos) << m;
  m = error_of([&] { load_train_config(c.path("model: tiny\ndata: {train: x.csv}\n"), {"train.precision=fp8"}); });
  EXPECT_NE(m.find("fp32, bf16"), std::string::npos) << m;
  m = error_of([&] { load_train_config(c.path("model: tiny\ndata: {train: x.csv}\n"), {"optim.lr"}); });
  EXPECT_NE(m.find("KEY=VALUE"), std::string::npos) << m;
  m = error_of([&] { load_train_config(c.path("model: nosuch\ndata: {train: x.csv}\n")); });
  EXPECT_NE(m.find("known names"), std::string::npos) << m;
  m = error_of([&] { load_train_config(c.path("model: tiny\ndata: {train: x.csv}\nloss: {name: siglip}\n")); });
  EXPECT_NE(m.find("init_logit_bias"), std::string::npos) << m;
  m = error_of([&] { load_train_config(c.path("model: tiny\n")); });
  EXPECT_NE(m.find("data.train"), std::string::npos) << m;
  m = error_of([&] { load_train_config(c.path("model: tiny\ndata: {train: x.csv, resize: lanczos}\n")); });
  EXPECT_NE(m.find("data.resize"), std::string::npos) << m;
  EXPECT_NE(m.find("pil, fast"), std::string::npos) << m;
  m = error_of([&] { load_train_config(c.path("model: tiny\ndata: {train: x.csv}\ndist: {backend: mpi}\n")); });
  EXPECT_NE(m.find("dist.backend"), std::string::npos) << m;
  EXPECT_NE(m.find("auto, gloo, nccl"), std::string::npos) << m;
  m = error_of([&] { load_train_config(c.path("model: tiny\ndata: {train: x.csv}\n"), {"dist.timeout_seconds=0"}); });
  EXPECT_NE(m.find("dist.timeout_seconds"), std::string::npos) << m;
  // Bounds come from the schema and name the key: NaN and negative values too.
  m = error_of([&] { load_train_config(c.path("model: tiny\ndata: {train: x.csv}\n"), {"optim.lr=.nan"}); });
  EXPECT_NE(m.find("optim.lr: must be in (0, 10], got nan"), std::string::npos) << m;
  m = error_of([&] { load_train_config(c.path("model: tiny\ndata: {train: x.csv}\n"), {"schedule.min_lr=-1"}); });
  EXPECT_NE(m.find("schedule.min_lr: must be in [0, 10]"), std::string::npos) << m;
  m = error_of([&] { load_train_config(c.path("model: tiny\ndata: {train: x.csv}\n"), {"train.device=gpu"}); });
  EXPECT_NE(m.find("train.device"), std::string::npos) << m;
  EXPECT_NE(m.find("auto, cpu, cuda, cuda:N"), std::string::npos) << m;
}

TEST(TrainConfig, RepeatedKeysAreErrorsAndIntegersAreDecimal) {
  Cfg c;
  // yaml-cpp would take the first value of a repeated key silently.
  auto m = error_of([&] { load_train_config(c.path("model: tiny\ndata:\n  train: x.csv\n  batch_size: 8\n  batch_size: 16\n")); });
  EXPECT_NE(m.find("t.yaml:5: key 'batch_size' repeats the one on line 4"), std::string::npos) << m;
  // "016" is sixteen, not octal 14; "1e12" and "0x10" are not integers.
  EXPECT_EQ(load_train_config(c.path("model: tiny\ndata: {train: x.csv}\n"), {"data.batch_size=016"}).data().batch_size(), 16);
  m = error_of([&] { load_train_config(c.path("model: tiny\ndata: {train: x.csv}\n"), {"data.batch_size=1e12"}); });
  EXPECT_NE(m.find("data.batch_size"), std::string::npos) << m;
  EXPECT_NE(m.find("decimal digits"), std::string::npos) << m;
  m = error_of([&] { load_train_config(c.path("model: tiny\ndata: {train: x.csv}\n"), {"data.workers=0x10"}); });
  EXPECT_NE(m.find("data.workers"), std::string::npos) << m;
  m = error_of([&] { load_train_config(c.path("model: tiny\ndata: {train: x.csv}\n"), {"train.steps=99999999999999999999"}); });
  EXPECT_NE(m.find("out of range"), std::string::npos) << m;
}

TEST(Args, RepeatedSingleFlagsAndMissingValuesAreUsageErrors) {
  auto parse = [](std::vector<std::string> v) { return Args(v); };
  auto a = parse({"--k", "2", "--k", "5"});
  EXPECT_THROW(a.get_int("k", 10), UsageError);
  auto b = parse({"--query", "a", "--query", "b"});
  EXPECT_EQ(b.get_all("query"), (std::vector<std::string>{"a", "b"}));  // repeatable flags stay so
  auto c = parse({"--json", "--query"});
  EXPECT_THROW(c.get_all("query"), UsageError);  // would have read queries from stdin
  auto d = parse({"--data"});
  EXPECT_THROW(d.require("data"), UsageError);
  auto e = parse({"--k", "3"});
  EXPECT_EQ(e.get_int("k", 10), 3);
}

TEST(Device, NamesResolveOrFailNamingTheKey) {
  EXPECT_TRUE(resolve_device("cpu", "k").is_cpu());
  for (const char* ok : {"auto", "cpu", "cuda", "cuda:0", "cuda:12"}) EXPECT_TRUE(valid_device_name(ok)) << ok;
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda:-1", "CPU", ""}) EXPECT_FALSE(valid_device_name(bad)) << bad;
  auto msg = test::error_of<std::invalid_argument>([] { resolve_device("tpu", "--device"); });
  EXPECT_NE(msg.find("--device: \"tpu\" is not a device; valid: auto, cpu, cuda, cuda:N"), std::string::npos) << msg;
  if (!at::hasCUDA()) {
    EXPECT_TRUE(resolve_device("auto", "train.device", 3).is_cpu());  // auto falls back to the CPU
    // A valid name this machine cannot honour: a run-time error (exit 1), not a usage error.
    msg = test::error_of<std::runtime_error>([] { resolve_device("cuda:1", "train.device"); });
    EXPECT_NE(msg.find("train.device: \"cuda:1\" asked for, but this build or machine has no CUDA device"),
              std::string::npos) << msg;
  } else {
    EXPECT_EQ(resolve_device("auto", "k", 0), c10::Device(c10::kCUDA, 0));
    EXPECT_THROW(resolve_device("cuda:999", "k"), std::runtime_error);
  }
}

TEST(Search, ExactTopKMatchesBruteForceInBothDtypes) {
  at::manual_seed(3);
  // E 64: the AVX2 kernels; E 20: the scalar ones. 5001 rows: a tail after the groups of 4.
  // 3 queries: the streaming scan; kBlockedQueries + 5 = 9: the blocked kernel (two groups of 4 and a
  // tail of 1; blocks of 64 rows leave an odd block of 9 at the end).
  for (int64_t E : {64, 20})
    for (int64_t Q : {int64_t{3}, kBlockedQueries + 5}) {
      auto emb = at::randn({5001, E});
      emb = emb / emb.norm(2, 1, true);
      auto q = at::randn({Q, E});
      for (auto dtype : {at::kFloat, at::kHalf}) {
        auto stored = emb.to(dtype);
        auto hits = search_index(stored, q, 7);
        auto ref = at::matmul(stored.to(at::kDouble), q.to(at::kDouble).t()).topk(7, 0);  // [7, Q]
        ASSERT_EQ(static_cast<int64_t>(hits.size()), Q);
        for (int64_t j = 0; j < Q; ++j) {
          ASSERT_EQ(hits[j].size(), 7u);
          for (int64_t i = 0; i < 7; ++i) {
            EXPECT_EQ(hits[j][i].row, std::get<1>(ref)[i][j].item<int64_t>()) << "E " << E << " Q " << Q << " query " << j << " rank " << i;
            EXPECT_NEAR(hits[j][i].score, std::get<0>(ref)[i][j].item<double>(), 1e-5);
          }
        }
      }
    }
  // k larger than the index: every row, best first.
  auto small = at::eye(4);
  auto all = search_index(small, at::tensor({0.1f, 0.9f, 0.5f, 0.0f}).view({1, 4}), 10);
  ASSERT_EQ(all[0].size(), 4u);
  EXPECT_EQ(all[0][0].row, 1);
  EXPECT_EQ(all[0][1].row, 2);
  EXPECT_EQ(all[0][3].row, 3);
}

TEST(Search, Int8RowsByHandAndTheirRerankIsExact) {
  // Scale max|x| / 127; codes round(x / scale): 63.5 -> 64 (half to even), 31.75 -> 32. A zero row: scale 0.
  auto q8 = quantize_rows(at::tensor({0.5f, -1.0f, 0.25f, 0.f, 0.f, 0.f}).view({2, 3}));
  EXPECT_NEAR(q8.scales[0].item<float>(), 1.0f / 127, 1e-9);
  EXPECT_EQ(q8.scales[1].item<float>(), 0.0f);
  EXPECT_TRUE(at::equal(q8.codes, at::tensor({64, -127, 32, 0, 0, 0}, at::kChar).view({2, 3})));
  at::manual_seed(5);
  for (int64_t E : {64, 20}) {
    auto emb = at::randn({3001, E});
    emb = (emb / emb.norm(2, 1, true)).to(at::kHalf);
    auto q = at::randn({3, E});
    const auto codes = quantize_rows(emb);
    const auto exact = search_index(emb, q, 10);
    // Reranking every row is the exact search; reranking 20 keeps scores exact and finds nearly
    // all of the top 10 (int8 rounding moves scores by ~1e-3; neighbours of random rows ~1e-2 apart).
    for (int64_t candidates : {int64_t{3001}, int64_t{20}}) {
      const auto hits = search_int8(codes, emb, q, 10, candidates);
      int64_t same = 0;
      for (int64_t j = 0; j < 3; ++j) {
        ASSERT_EQ(hits[j].size(), 10u);
        for (int64_t i = 0; i < 10; ++i) {
          same += hits[j][i].row == exact[j][i].row;
          if (hits[j][i].row == exact[j][i].row) {
            EXPECT_EQ(hits[j][i].score, exact[j][i].score);  // the same kernel
          }
        }
      }
      if (candidates == 3001) EXPECT_EQ(same, 30) << "E " << E;
      else EXPECT_GE(same, 27) << "E " << E;
    }
  }
  std::vector<std::vector<int64_t>> found{{1, 2, 3}, {4, 5, 6}}, ref{{3, 2, 9}, {7, 8, 9}};
  EXPECT_NEAR(recall_at_k(found, ref), (2.0 / 3 + 0.0) / 2, 1e-12);
}

TEST(ZeroShot, ReportByHand) {
  // 4 images, 3 classes. Predictions (argmax): 0, 2, 1, 1; labels 0, 1, 1, -1 (unlabelled).
  auto probs = at::tensor({0.7f, 0.2f, 0.1f, 0.1f, 0.3f, 0.6f, 0.2f, 0.5f, 0.3f, 0.1f, 0.8f, 0.1f}).view({4, 3});
  auto r = zero_shot_report(probs, {0, 1, 1, -1});
  EXPECT_EQ(r.labelled, 3);
  EXPECT_NEAR(r.top1, 2.0 / 3, 1e-12);
  EXPECT_NEAR(r.top5, 1.0, 1e-12);
  EXPECT_NEAR(r.per_class[0], 1.0, 1e-12);
  EXPECT_NEAR(r.per_class[1], 0.5, 1e-12);
  EXPECT_TRUE(std::isnan(r.per_class[2]));
  EXPECT_EQ(r.confusion[1][2].item<int64_t>(), 1);
  EXPECT_EQ(r.confusion[1][1].item<int64_t>(), 1);
  EXPECT_EQ(r.confusion.sum().item<int64_t>(), 3);
  EXPECT_EQ(parse_class_list(" cat, dog ,,bird"), (std::vector<std::string>{"cat", "dog", "bird"}));
}

TEST(Retrieval, MetricsByHand) {
  // Three pairs in 2-D. Image 0 best matches text 0; image 1 best matches text 2 (its own text
  // second); image 2 best matches text 2.
  auto img = at::tensor({1.0, 0.0, 0.0, 1.0, 0.6, 0.8}, at::kFloat).view({3, 2});
  auto txt = at::tensor({1.0, 0.0, 0.8, 0.6, 0.0, 1.0}, at::kFloat).view({3, 2});
  auto m = retrieval_metrics(img, txt, /*chunk=*/2);
  // image ranks: 0 (1 vs .8,0), 1 (sims .0,.6,1 -> own .6 has one higher), 1 (.6,.96,.8 -> own .8 < .96)
  EXPECT_NEAR(m.at("image_to_text_R@1"), 1.0 / 3, 1e-9);
  EXPECT_NEAR(m.at("image_to_text_R@5"), 1.0, 1e-9);
  EXPECT_NEAR(m.at("image_to_text_mean_rank"), (0 + 1 + 1) / 3.0 + 1, 1e-9);
  EXPECT_NEAR(m.at("image_to_text_median_rank"), 2, 1e-9);
  // text ranks: t0 sims (1, 0, .6) own 1 -> 0; t1 (.8, .6, .96) own .6 -> 2; t2 (0, 1, .8) own .8 -> 1
  EXPECT_NEAR(m.at("text_to_image_R@1"), 1.0 / 3, 1e-9);
  EXPECT_NEAR(m.at("text_to_image_mean_rank"), (0 + 2 + 1) / 3.0 + 1, 1e-9);
}

}  // namespace
}  // namespace torchclip
