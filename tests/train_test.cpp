#include "train/evaluate.h"
#include "train/train_config.h"
#include "train/trainer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "support.h"

namespace torchclip {
namespace {

TEST(Schedule, WarmupCosineConstAndCooldownByHand) {
  ScheduleCfg s = ScheduleCfg().name("cosine").warmup_steps(10);
  EXPECT_DOUBLE_EQ(learning_rate(s, 1.0, 0, 110), 0.1);  // base * (step + 1) / warmup
  EXPECT_DOUBLE_EQ(learning_rate(s, 1.0, 9, 110), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(s, 1.0, 10, 110), 1.0);                  // cos(0)
  EXPECT_NEAR(learning_rate(s, 1.0, 60, 110), 0.5, 1e-12);                // half way: 0.5 (1 + cos(pi/2))
  EXPECT_NEAR(learning_rate(s, 1.0, 109, 110), 0.5 * (1 + std::cos(M_PI * 99 / 100)), 1e-12);
  EXPECT_DOUBLE_EQ(learning_rate(ScheduleCfg().name("const").warmup_steps(0), 0.3, 50, 100), 0.3);
  ScheduleCfg c = ScheduleCfg().name("const-cooldown").warmup_steps(0).cooldown_steps(20).min_lr(0.1);
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
  EXPECT_EQ(cfg.train().precision(), "bf16");
  EXPECT_DOUBLE_EQ(cfg.data().scale()[0], 0.5);
  EXPECT_EQ(cfg.model().vision_cfg().image_size(), 28);
  EXPECT_EQ(cfg.data().batch_size(), 32);
  EXPECT_EQ(cfg.data().resize(), "fast");
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
