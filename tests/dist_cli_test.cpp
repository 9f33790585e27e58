// `torchclip train` data parallel, as real processes: 2 ranks x batch B against 1 process x 2B
// (same losses, same parameters), a rank killed mid-run (the other ends with an error within the
// timeout, then --resume auto finishes the run), and resuming on another world size.
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <iostream>
#include <random>
#include <regex>
#include <sstream>

#include "distributed/launch.h"
#include "io/safetensors.h"
#include "support.h"

#include <ATen/ATen.h>

namespace fs = std::filesystem;

namespace {

using torchclip::test::run_cli;
using torchclip::test::run_shell;

std::vector<double> losses(const fs::path& metrics) {
  std::ifstream in(metrics);
  std::vector<double> out;
  const std::regex re("\"loss\": ([-0-9.eE+]+)");
  std::smatch m;
  for (std::string line; std::getline(in, line);)
    if (line.find("\"eval\"") == std::string::npos && std::regex_search(line, m, re)) out.push_back(std::stod(m[1]));
  return out;
}

/// The values of `key` (a number or a list of numbers) in each metrics line that has it.
std::vector<std::vector<double>> field(const fs::path& metrics, const std::string& key) {
  std::ifstream in(metrics);
  std::vector<std::vector<double>> out;
  const std::regex re("\"" + key + "\": (\\[[^\\]]*\\]|[-0-9.eE+]+)");
  std::smatch m;
  for (std::string line; std::getline(in, line);) {
    if (!std::regex_search(line, m, re)) continue;
    std::vector<double> v;
    std::string list = m[1].str();
    if (list[0] == '[') list = list.substr(1, list.size() - 2);
    std::istringstream items(list);
    for (std::string x; std::getline(items, x, ',');) v.push_back(std::stod(x));
    out.push_back(v);
  }
  return out;
}

/// The largest |a - b| over the tensors of two safetensors files with the same names.
double max_diff(const fs::path& a, const fs::path& b, const std::string& prefix = "") {
  auto ta = torchclip::load_safetensors(a.string()), tb = torchclip::load_safetensors(b.string());
  double worst = 0;
  int compared = 0;
  for (const auto& [name, t] : ta.tensors) {
    if (name.rfind(prefix, 0) != 0) continue;
    EXPECT_TRUE(tb.tensors.count(name)) << b << " lacks " << name;
    if (!tb.tensors.count(name)) continue;
    worst = std::max(worst, (t.to(at::kDouble) - tb.tensors.at(name).to(at::kDouble)).abs().max().item<double>());
    ++compared;
  }
  EXPECT_GT(compared, 0) << a << " has no tensor named " << prefix << "*";
  return worst;
}

class DistTrain : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(torchclip::test::temp_dir("dist"));
    const fs::path& d = *dir_;
    fs::create_directories(d / "img");
    std::ofstream csv(d / "d.csv");
    csv << "filepath,title,label\n";
    std::mt19937 rng(7);
    const char* names[] = {"red", "green", "blue", "grey"};
    for (int i = 0; i < 64; ++i) {
      const int c = i % 4;
      cv::Mat m(16, 16, CV_8UC3, cv::Scalar(c == 2 ? 200 : 30, c == 1 ? 200 : 30, c == 0 ? 200 : 30));
      m.at<cv::Vec3b>(static_cast<int>(rng() % 16), static_cast<int>(rng() % 16)) = cv::Vec3b(255, 255, 255);
      cv::imwrite((d / "img" / (std::to_string(i) + ".png")).string(), m);
      csv << "img/" << i << ".png,a " << names[c] << " square number " << i << "," << c << "\n";
    }
    const std::string model = "embed_dim: 16\nvision_cfg: {image_size: 16, patch_size: 8, layers: 2, width: 32, head_width: 16}\n"
                              "text_cfg: {context_length: 12, width: 32, heads: 2, layers: 2}\n";
    std::ofstream(d / "model.yaml") << model;
    std::ofstream(d / "model_siglip.yaml") << model << "init_logit_scale: 2.302585\ninit_logit_bias: -10\n";
    std::ofstream(d / "model_rn.yaml") << "embed_dim: 16\nvision_cfg: {image_size: 32, layers: [1, 1, 1, 1], width: 8, patch_size: null}\n"
                                       << "text_cfg: {context_length: 12, width: 32, heads: 2, layers: 2}\n";
    // scale [1, 1]: no random crop, so the two runs see identical pixels.
    std::ofstream(d / "train.yaml") << "model: " << (d / "model.yaml").string() << "\n"
                                    << "data:\n  train: " << (d / "d.csv").string()
                                    << "\n  batch_size: 8\n  workers: 2\n  scale: [1.0, 1.0]\n"
                                    << "optim: {lr: 1.0e-3}\nschedule: {warmup_steps: 2}\n"
                                    << "train: {steps: 6, threads: 1}\n";
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }
  static std::string train(const std::string& out, const std::string& extra) {
    return "train --config " + (*dir_ / "train.yaml").string() + " --out " + (*dir_ / out).string() + " " + extra;
  }
  /// Each (flags, key): a config error (exit 3) naming the key, before any rank trains.
  static void expect_layout_errors(const std::string& out, const std::vector<std::pair<std::string, std::string>>& cases) {
    for (const auto& [extra, key] : cases) {
      auto bad = run_cli(train(out, extra));
      EXPECT_EQ(bad.code, 3) << extra << "\n" << bad.out;
      EXPECT_NE(bad.out.find(key), std::string::npos) << extra << "\n" << bad.out;
      EXPECT_EQ(bad.out.find("starting training"), std::string::npos) << extra << "\n" << bad.out;
    }
  }
  static fs::path* dir_;
};
fs::path* DistTrain::dir_ = nullptr;

class DistTrainAccess : public DistTrain {
 public:
  static fs::path* dir() { return dir_; }
  static std::string command(const std::string& out, const std::string& extra) { return train(out, extra); }
};
fs::path* DistTrainDir() { return DistTrainAccess::dir(); }
std::string DistTrainCommand(const std::string& out, const std::string& extra) { return DistTrainAccess::command(out, extra); }
std::string fmt_step(int step) {
  char b[32];
  std::snprintf(b, sizeof(b), "/step-%08d", step);
  return b;
}

// 2 ranks x 8 with the losses gathered with gradient equal 1 rank x 16: the data split is
// rank-major striping of the same permutation, so the global batches hold the same samples.
TEST_F(DistTrain, TwoRanksMatchOneProcessWithTheWholeBatch) {
  struct Combo {
    std::string name, loss, model;
    bool local_loss;
  };
  const std::vector<Combo> combos = {{"clip", "clip", "model.yaml", false},
                                     {"clip_local", "clip", "model.yaml", true},
                                     {"siglip", "siglip", "model_siglip.yaml", false}};
  for (const auto& c : combos) {
    const std::string common = "--set loss.name=" + c.loss + " --set model=" + (*dir_ / c.model).string();
    auto one = run_cli(train("one_" + c.name, common + " --set data.batch_size=16"));
    ASSERT_EQ(one.code, 0) << one.out;
    auto two = run_cli(train("two_" + c.name, common + " --nproc 2 --set loss.gather_with_grad=true --set loss.local_loss=" +
                                                  (c.local_loss ? "true" : "false") + " --set dist.check_every=1"));
    ASSERT_EQ(two.code, 0) << two.out;
    EXPECT_NE(two.out.find("data parallel: 2 ranks (gloo backend"), std::string::npos) << two.out;
    EXPECT_EQ(two.out.find("trained 6 steps"), two.out.rfind("trained 6 steps")) << "rank 1 printed too:\n" << two.out;
    auto l1 = losses(*dir_ / ("one_" + c.name) / "metrics.jsonl"), l2 = losses(*dir_ / ("two_" + c.name) / "metrics.jsonl");
    ASSERT_EQ(l1.size(), 6u);
    ASSERT_EQ(l2.size(), 6u);
    double worst_loss = 0;
    for (size_t i = 0; i < l1.size(); ++i) {
      EXPECT_NEAR(l1[i], l2[i], 1e-5 * std::abs(l1[i])) << c.name << " step " << i + 1;
      worst_loss = std::max(worst_loss, std::abs(l1[i] - l2[i]));
    }
    auto w1 = torchclip::load_safetensors((*dir_ / ("one_" + c.name) / "checkpoints/step-00000006/model.safetensors").string());
    auto w2 = torchclip::load_safetensors((*dir_ / ("two_" + c.name) / "checkpoints/step-00000006/model.safetensors").string());
    double worst_param = 0;
    for (const auto& [name, t] : w1.tensors) {
      ASSERT_TRUE(w2.tensors.count(name)) << name;
      worst_param = std::max(worst_param, (t - w2.tensors.at(name)).abs().max().item<double>());
    }
    std::cout << "[ dist ] " << c.name << ": 6 steps, max |loss diff| " << worst_loss << ", max |param diff| " << worst_param
              << "\n";
    // lr 1e-3 x 6 steps moves parameters by up to 6e-3; Adam's g / sqrt(v) magnifies fp32
    // rounding of near-zero gradients, so the tolerance is 3e-4 (5% of the largest move).
    EXPECT_LT(worst_param, 3e-4) << c.name;
  }
}

struct Survivor {
  int exit_code = -1;
  double seconds = -1;  // from the signal to rank 0's exit
  std::string output;
};

/// Starts ranks 0 and 1 as torchrun would (environment only), waits for checkpoint `step` of
/// run `name`, sends `signal` to rank 1, and reports how rank 0 ended.
Survivor signal_rank1(const std::string& name, const std::string& signal, int step, double timeout) {
  const int port = torchclip::dist::free_local_port();
  const fs::path out = *DistTrainDir() / name;
  std::ostringstream script;
  script << "cd " << DistTrainDir()->string() << " && export WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT="
         << port << " OMP_NUM_THREADS=1; args='"
         << DistTrainCommand(name, "--set train.steps=400 --set train.checkpoint_every=2 --set dist.timeout_seconds=" +
                                       std::to_string(timeout))
         << "'; RANK=0 LOCAL_RANK=0 " << TORCHCLIP_BINARY << " $args > " << name << "0.log 2>&1 & p0=$!; "
         << "RANK=1 LOCAL_RANK=1 " << TORCHCLIP_BINARY << " $args > " << name << "1.log 2>&1 & p1=$!; "
         << "for i in $(seq 600); do ls " << (out / "checkpoints").string() << fmt_step(step)
         << " >/dev/null 2>&1 && break; sleep 0.1; done; "
         << "kill -" << signal << " $p1; t0=$(date +%s.%N); wait $p0; rc=$?; t1=$(date +%s.%N); kill -9 $p1 2>/dev/null; "
         << "echo \"rank0_exit=$rc seconds=$(echo $t1 $t0 | awk '{print $1 - $2}')\"; grep -E 'torchclip train' " << name
         << "0.log | tail -2";
  auto r = run_shell(script.str());
  std::cout << "[ dist ] " << r.out.substr(0, 600) << "\n";
  Survivor s;
  s.output = r.out;
  std::smatch m;
  if (std::regex_search(r.out, m, std::regex("rank0_exit=(\\d+) seconds=([0-9.]+)"))) {
    s.exit_code = std::stoi(m[1]);
    s.seconds = std::stod(m[2]);
  }
  return s;
}

// A rank killed with SIGKILL mid-run: the survivor reports the failed collective and exits within
// the timeout; --resume auto then finishes the run from the last checkpoint.
TEST_F(DistTrain, AKilledRankEndsTheOthersWithinTheTimeoutAndResumeContinues) {
  const auto s = signal_rank1("fault", "9", 4, 20);
  EXPECT_GT(s.exit_code, 0) << s.output;
  EXPECT_GE(s.seconds, 0) << s.output;
  EXPECT_LT(s.seconds, 20 + 10) << s.output;
  EXPECT_NE(s.output.find("rank 0/2:"), std::string::npos) << s.output;
  EXPECT_NE(s.output.find("failed"), std::string::npos) << s.output;
  // Continue with the launcher on the same world size: each rank takes its own loader position.
  const fs::path out = *dir_ / "fault";
  auto again = run_cli(train("fault", "--nproc 2 --resume auto --set train.steps=400 --set train.checkpoint_every=2"));
  ASSERT_EQ(again.code, 0) << again.out;
  EXPECT_NE(again.out.find("resuming from"), std::string::npos) << again.out;
  EXPECT_TRUE(fs::exists(out / "checkpoints/step-00000400")) << again.out;
  // One process resuming the 2-rank checkpoint: the documented rule (next epoch, new split).
  auto one = run_cli(train("fault", "--resume auto --set train.steps=402"));
  ASSERT_EQ(one.code, 0) << one.out;
  EXPECT_NE(one.out.find("resuming 1 rank(s) from a checkpoint of 2"), std::string::npos) << one.out;
}

// A rank that hangs (SIGSTOP) rather than dies: the survivor gives up at dist.timeout_seconds.
TEST_F(DistTrain, AHungRankEndsTheOthersAtTheTimeout) {
  const auto s = signal_rank1("hang", "STOP", 2, 4);
  EXPECT_GT(s.exit_code, 0) << s.output;
  EXPECT_GT(s.seconds, 2) << s.output;       // it waited for the peer ...
  EXPECT_LT(s.seconds, 4 + 10) << s.output;  // ... and gave up at the timeout
  EXPECT_NE(s.output.find("rank 0/2:"), std::string::npos) << s.output;
}

// Exact resume on the same world size: each rank continues from its own loader position, so 6
// steps straight equal 3 steps, a stop with checkpoint, and a resume, bit for bit.
TEST_F(DistTrain, ResumeOnTheSameWorldSizeIsExact) {
  const std::string common = "--nproc 2 --set loss.gather_with_grad=true --set loss.local_loss=true";
  auto a = run_cli(train("exact_straight", common));
  ASSERT_EQ(a.code, 0) << a.out;
  auto b = run_cli(train("exact_resumed", common + " --stop-after 3"));
  ASSERT_EQ(b.code, 0) << b.out;
  b = run_cli(train("exact_resumed", common + " --resume auto"));
  ASSERT_EQ(b.code, 0) << b.out;
  EXPECT_NE(b.out.find("resuming from"), std::string::npos) << b.out;
  auto la = losses(*dir_ / "exact_straight/metrics.jsonl"), lb = losses(*dir_ / "exact_resumed/metrics.jsonl");
  ASSERT_EQ(la.size(), 6u);
  EXPECT_EQ(la, lb);
  auto wa = torchclip::load_safetensors((*dir_ / "exact_straight/checkpoints/step-00000006/model.safetensors").string());
  auto wb = torchclip::load_safetensors((*dir_ / "exact_resumed/checkpoints/step-00000006/model.safetensors").string());
  for (const auto& [name, t] : wa.tensors) EXPECT_TRUE(t.equal(wb.tensors.at(name))) << name;
}

// ZeRO stages 1 and 2 against plain data parallelism, 2 ranks x 20 steps with gradient clipping
// (so the global norm over shards decides every update): the same losses and parameters; the
// optimizer state split between the ranks (whole tensors: the shares sum to one rank's state
// without ZeRO) and, with stage 2, the gradients too; checkpoints consolidated (every moment,
// equal to the unsharded run's); resuming exact on the same layout and working on any other.
TEST_F(DistTrain, ZeroShardingEqualsDataParallelAndResumesOnAnyLayout) {
  const std::string common = "--set train.steps=20 --set train.grad_clip=0.5 --set train.checkpoint_every=10 "
                             "--set loss.gather_with_grad=true --set loss.local_loss=true --set dist.check_every=5";
  for (const std::string shard : {"none", "optimizer", "gradients"}) {
    auto r = run_cli(train("zero_" + shard, "--nproc 2 " + common + " --set dist.shard=" + shard));
    ASSERT_EQ(r.code, 0) << r.out;
    if (shard != "none") {
      EXPECT_NE(r.out.find("ZeRO stage " + std::string(shard == "optimizer" ? "1" : "2")), std::string::npos) << r.out;
    }
  }
  const fs::path none = *dir_ / "zero_none", opt = *dir_ / "zero_optimizer", grad = *dir_ / "zero_gradients";
  const auto l0 = losses(none / "metrics.jsonl");
  ASSERT_EQ(l0.size(), 20u);
  const auto n0 = field(none / "metrics.jsonl", "grad_norm");
  ASSERT_EQ(n0.size(), 20u);
  EXPECT_GT(n0[0][0], 0.5) << "the clip must act for the test to check the global norm";
  const std::string last = "checkpoints/step-00000020/";
  for (const fs::path& run : {opt, grad}) {
    const auto l = losses(run / "metrics.jsonl");
    const auto n = field(run / "metrics.jsonl", "grad_norm");
    ASSERT_EQ(l.size(), 20u);
    ASSERT_EQ(n.size(), 20u);
    double worst_loss = 0, worst_norm = 0;
    for (size_t i = 0; i < l.size(); ++i) {
      worst_loss = std::max(worst_loss, std::abs(l[i] - l0[i]));
      worst_norm = std::max(worst_norm, std::abs(n[i][0] - n0[i][0]) / n0[i][0]);
    }
    const double params = max_diff(none / (last + "model.safetensors"), run / (last + "model.safetensors"));
    const double moments = max_diff(none / (last + "trainer.safetensors"), run / (last + "trainer.safetensors"), "exp_avg");
    std::cout << "[ zero ] " << run.filename().string() << ": 20 steps, max |loss diff| " << worst_loss
              << ", max relative grad-norm diff " << worst_norm << ", max |param diff| " << params
              << ", max |moment diff| " << moments << "\n";
    // The updates are the same arithmetic on the same averaged gradients (a 2-rank sum is the
    // same in an all-reduce and a reduce); only the order of the sums in the double gradient
    // norm (per shard, then over ranks) differs, a relative 1e-16 change of the clip factor
    // that rounds away in float gradients. Measured: 0 everywhere. The tolerance allows a few
    // float ulps; a missed or doubled update (lr 1e-3) is 1000 times larger.
    EXPECT_LT(worst_loss, 1e-6);
    EXPECT_LT(worst_norm, 1e-9);
    EXPECT_LT(params, 1e-6);
    EXPECT_LT(moments, 1e-6);
  }
  // Accumulation (2 micro-batches: the hooks arm on the last backward only) and gradient
  // checkpointing (recomputation inside backward) under stage 2 equal them without ZeRO.
  const std::string accum = "--nproc 2 --set train.steps=6 --set train.accum_steps=2 --set train.grad_checkpointing=true "
                            "--set loss.gather_with_grad=true --set data.batch_size=4 --set dist.shard=";
  for (const std::string shard : {"none", "gradients"}) {
    auto r = run_cli(train("zero_accum_" + shard, accum + shard));
    ASSERT_EQ(r.code, 0) << r.out;
  }
  EXPECT_EQ(losses(*dir_ / "zero_accum_none/metrics.jsonl"), losses(*dir_ / "zero_accum_gradients/metrics.jsonl"));
  EXPECT_LT(max_diff(*dir_ / "zero_accum_none/checkpoints/step-00000006/model.safetensors",
                     *dir_ / "zero_accum_gradients/checkpoints/step-00000006/model.safetensors"),
            1e-6);

  // Memory after the first step, per rank: the state split without overlap, the gradients too
  // with stage 2. (How evenly is the model's business: here the token embedding is most of it.)
  const auto m0 = field(none / "metrics.jsonl", "optimizer_state_bytes"), m1 = field(opt / "metrics.jsonl", "optimizer_state_bytes"),
             m2 = field(grad / "metrics.jsonl", "optimizer_state_bytes");
  const auto g0 = field(none / "metrics.jsonl", "gradient_bytes"), g1 = field(opt / "metrics.jsonl", "gradient_bytes"),
             g2 = field(grad / "metrics.jsonl", "gradient_bytes");
  ASSERT_EQ(m0.size(), 1u);
  ASSERT_EQ(m1.size(), 1u);
  ASSERT_EQ(m2.size(), 1u);
  ASSERT_EQ(m0[0].size(), 2u);
  EXPECT_EQ(m0[0][0], m0[0][1]);
  for (const auto* m : {&m1, &m2}) {
    EXPECT_EQ((*m)[0][0] + (*m)[0][1], m0[0][0]);
    EXPECT_GT(std::min((*m)[0][0], (*m)[0][1]), 0);
  }
  EXPECT_EQ(g1[0], g0[0]);  // stage 1 all-reduces every gradient
  EXPECT_EQ(g2[0][0] + g2[0][1], g0[0][0]);
  EXPECT_GT(std::min(g2[0][0], g2[0][1]), 0);

  // Exact resume on the same layout: 10 steps, stop, resume = 20 straight, bit for bit.
  auto b = run_cli(train("zero_resumed", "--nproc 2 " + common + " --set dist.shard=gradients --stop-after 10"));
  ASSERT_EQ(b.code, 0) << b.out;
  b = run_cli(train("zero_resumed", "--nproc 2 " + common + " --set dist.shard=gradients --resume auto"));
  ASSERT_EQ(b.code, 0) << b.out;
  EXPECT_EQ(losses(*dir_ / "zero_resumed/metrics.jsonl"), losses(grad / "metrics.jsonl"));
  EXPECT_EQ(max_diff(grad / (last + "model.safetensors"), *dir_ / ("zero_resumed/" + last + "model.safetensors")), 0.0);
  EXPECT_EQ(max_diff(grad / (last + "trainer.safetensors"), *dir_ / ("zero_resumed/" + last + "trainer.safetensors"), "exp_avg"), 0.0);

  // The stage-2 checkpoint of step 10 on other layouts: stage 1 and no ZeRO on 2 ranks continue
  // it as the stage-2 run did (same data positions); one process and 4 ranks resume it too.
  const std::string step10 = (grad / "checkpoints/step-00000010").string();
  for (const std::string& layout : {std::string("--nproc 2 --set dist.shard=optimizer"), std::string("--nproc 2 --set dist.shard=none"),
                                    std::string("--set dist.shard=none"), std::string("--nproc 4 --set dist.shard=gradients")}) {
    const std::string out = "zero_from10_" + std::to_string(std::hash<std::string>{}(layout) % 100000);
    auto r = run_cli(train(out, common + " " + layout + " --resume " + step10 + " --set data.batch_size=" +
                                    (layout.find("nproc 4") != std::string::npos ? "4" : layout.find("nproc") != std::string::npos ? "8" : "16")));
    ASSERT_EQ(r.code, 0) << layout << "\n" << r.out;
    EXPECT_NE(r.out.find("resuming from " + step10), std::string::npos) << r.out;
    if (layout.find("--nproc 2") == std::string::npos) continue;  // another world size splits the data differently
    const double params = max_diff(grad / (last + "model.safetensors"), *dir_ / (out + "/" + last + "model.safetensors"));
    std::cout << "[ zero ] stage-2 checkpoint resumed with " << layout << ": max |param diff| at step 20 " << params << "\n";
    EXPECT_LT(params, 1e-6) << layout;
  }
}

// Split towers: the image tower on rank 0, the text tower on rank 1, both reading the batches one
// process reads: 10 steps with clipping equal one process (ViT and ModifiedResNet, clip and
// siglip); each rank holds only its tower; the checkpoint is whole (one process resumes it
// exactly); stop and resume is exact; impossible layouts are config errors before training.
TEST_F(DistTrain, SplitTowersEqualOneProcessAndResume) {
  const std::string common = "--set train.steps=10 --set train.grad_clip=0.5 --set train.checkpoint_every=5 ";
  struct Combo {
    std::string name, model, loss, extra;
  };
  // bf16: autocast covers the towers, the loss runs in float, in both layouts. The split ViT run
  // also evaluates (rank 0 gathers the text tower, evaluates, frees it) at steps 4 and 8.
  for (const Combo& c : {Combo{"vit", "model.yaml", "clip", "--set data.val=" + (*dir_ / "d.csv").string() + " --set train.eval_every=4"},
                         Combo{"rn", "model_rn.yaml", "clip", ""}, Combo{"siglip", "model_siglip.yaml", "siglip", ""},
                         Combo{"bf16", "model.yaml", "clip", "--set train.precision=bf16"}}) {
    const std::string args = common + "--set model=" + (*dir_ / c.model).string() + " --set loss.name=" + c.loss + " " + c.extra;
    auto one = run_cli(train("towers_one_" + c.name, args));
    ASSERT_EQ(one.code, 0) << one.out;
    auto two = run_cli(train("towers_split_" + c.name, "--nproc 2 --set dist.towers=split " + args));
    ASSERT_EQ(two.code, 0) << two.out;
    EXPECT_NE(two.out.find("model parallel: image tower on rank 0, text tower on rank 1"), std::string::npos) << two.out;
    if (c.name == "vit") {
      EXPECT_NE(two.out.find("eval at step 8:"), std::string::npos) << two.out;
      EXPECT_EQ(two.out.find("eval at step 8:"), two.out.rfind("eval at step 8:")) << "rank 1 evaluated too:\n" << two.out;
    }
    const fs::path a = *dir_ / ("towers_one_" + c.name), b = *dir_ / ("towers_split_" + c.name);
    const auto la = losses(a / "metrics.jsonl"), lb = losses(b / "metrics.jsonl");
    ASSERT_EQ(la.size(), 10u);
    ASSERT_EQ(lb.size(), 10u);
    double worst_loss = 0;
    for (size_t i = 0; i < la.size(); ++i) worst_loss = std::max(worst_loss, std::abs(la[i] - lb[i]));
    const std::string last = "checkpoints/step-00000010/";
    const double params = max_diff(a / (last + "model.safetensors"), b / (last + "model.safetensors"));
    const double moments = max_diff(a / (last + "trainer.safetensors"), b / (last + "trainer.safetensors"), "exp_avg");
    std::cout << "[ towers ] " << c.name << ": 10 steps, max |loss diff| " << worst_loss << ", max |param diff| " << params
              << ", max |moment diff| " << moments << "\n";
    // The same features, loss and gradients as one process, computed in two backward passes
    // that meet at the features: the arithmetic is the same, so the tolerance is float ulps.
    EXPECT_LT(worst_loss, 1e-6) << c.name;
    EXPECT_LT(params, 1e-6) << c.name;
    EXPECT_LT(moments, 1e-6) << c.name;
    // Each rank holds its tower: the two parameter counts add up to one process's.
    const auto p1 = field(a / "metrics.jsonl", "parameter_bytes"), p2 = field(b / "metrics.jsonl", "parameter_bytes");
    ASSERT_EQ(p1.size(), 1u);
    ASSERT_EQ(p2.size(), 1u);
    ASSERT_EQ(p2[0].size(), 2u);
    EXPECT_EQ(p2[0][0] + p2[0][1], p1[0][0]);
    EXPECT_GT(std::min(p2[0][0], p2[0][1]), 0);
  }
  // Stop at step 5 and resume: bit for bit the straight run. One process resumes the split
  // checkpoint of step 5 exactly as it resumes its own (the data position is one reader's).
  const std::string vit = common + "--set model=" + (*dir_ / "model.yaml").string();
  auto r = run_cli(train("towers_resumed", "--nproc 2 --set dist.towers=split " + vit + " --stop-after 5"));
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli(train("towers_resumed", "--nproc 2 --set dist.towers=split " + vit + " --resume auto"));
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string last = "checkpoints/step-00000010/model.safetensors";
  EXPECT_EQ(losses(*dir_ / "towers_resumed/metrics.jsonl"), losses(*dir_ / "towers_split_vit/metrics.jsonl"));
  EXPECT_EQ(max_diff(*dir_ / ("towers_split_vit/" + last), *dir_ / ("towers_resumed/" + last)), 0.0);
  r = run_cli(train("towers_to_one", vit + " --resume " + (*dir_ / "towers_split_vit/checkpoints/step-00000005").string()));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_LT(max_diff(*dir_ / ("towers_one_vit/" + last), *dir_ / ("towers_to_one/" + last)), 1e-6);

  // Impossible layouts: config errors (exit 3) naming the key, before any rank trains.
  expect_layout_errors("towers_bad", {{"--set dist.towers=split", "dist.towers"},
                                       {"--nproc 3 --set dist.towers=split", "dist.towers"},
                                       {"--nproc 2 --set dist.towers=split --set dist.shard=optimizer", "dist.shard"},
                                       {"--nproc 2 --set dist.towers=split --set train.accum_steps=2", "train.accum_steps"}});
}

// Pipeline: the image tower's blocks cut into 2 stages on 2 ranks, each batch in M micro-batches
// (GPipe fill-drain), the loss over the whole batch on the last stage. 10 steps with clipping
// equal one process (ViT with M = 1, 2, 4, siglip, bf16 and a ModifiedResNet with M = 1: its
// BatchNorm normalises each micro-batch by its own statistics); stop and
// resume is exact, one process resumes a pipeline checkpoint; 2 stages x 2 replicas (4 processes)
// equal 2 data-parallel ranks; the bubble is recorded; impossible layouts are config errors.
TEST_F(DistTrain, PipelineEqualsOneProcessComposesWithDataParallelAndResumes) {
  const std::string common = "--set train.steps=10 --set train.grad_clip=0.5 --set train.checkpoint_every=5 ";
  const std::string last = "checkpoints/step-00000010/";
  auto compare = [&](const std::string& name, const fs::path& a, const fs::path& b, double tolerance) {
    const auto la = losses(a / "metrics.jsonl"), lb = losses(b / "metrics.jsonl");
    ASSERT_EQ(la.size(), 10u) << name;
    ASSERT_EQ(lb.size(), 10u) << name;
    double worst_loss = 0;
    for (size_t i = 0; i < la.size(); ++i) worst_loss = std::max(worst_loss, std::abs(la[i] - lb[i]));
    const double params = max_diff(a / (last + "model.safetensors"), b / (last + "model.safetensors"));
    const double moments = max_diff(a / (last + "trainer.safetensors"), b / (last + "trainer.safetensors"), "exp_avg");
    std::cout << "[ pipeline ] " << name << ": 10 steps, max |loss diff| " << worst_loss << ", max |param diff| " << params
              << ", max |moment diff| " << moments << "\n";
    EXPECT_LT(worst_loss, tolerance) << name;
    EXPECT_LT(params, tolerance) << name;
    EXPECT_LT(moments, tolerance) << name;
  };
  struct Combo {
    std::string name, model, loss, extra;
    int64_t micro;
  };
  std::map<std::string, fs::path> reference;  // one-process runs by model, loss and extra
  for (const Combo& c : {Combo{"vit_m1", "model.yaml", "clip", "", 1}, Combo{"vit_m2", "model.yaml", "clip", "", 2},
                         Combo{"vit_m4", "model.yaml", "clip", "", 4}, Combo{"siglip_m2", "model_siglip.yaml", "siglip", "", 2},
                         Combo{"bf16_m1", "model.yaml", "clip", "--set train.precision=bf16", 1},
                         Combo{"rn_m1", "model_rn.yaml", "clip", "", 1}}) {
    const std::string args = common + "--set model=" + (*dir_ / c.model).string() + " --set loss.name=" + c.loss + " " + c.extra;
    const std::string key = c.model + c.loss + c.extra;
    if (!reference.count(key)) {
      auto one = run_cli(train("pipe_one_" + c.name, args));
      ASSERT_EQ(one.code, 0) << one.out;
      reference[key] = *dir_ / ("pipe_one_" + c.name);
    }
    auto two = run_cli(train("pipe_" + c.name, "--nproc 2 --set dist.pipeline_stages=2 --set dist.micro_batches=" +
                                                   std::to_string(c.micro) + " " + args));
    ASSERT_EQ(two.code, 0) << two.out;
    EXPECT_NE(two.out.find("pipeline parallel: 2 stages x 1 data-parallel replicas"), std::string::npos) << two.out;
    EXPECT_NE(two.out.find("pipeline bubble over 9 steps"), std::string::npos) << two.out;
    // One micro-batch: the same arithmetic as one process, so float ulps. Several: each block's
    // weight gradient is a sum over micro-batches instead of one matrix product over the batch,
    // so the sums round differently (about 1e-7 relative); over 10 AdamW steps at lr 1e-3 that
    // stays under 1e-5, while one missed or doubled micro-batch would move the weights by ~1e-3.
    // (In bf16 those partial products round to bf16 each, about 4e-3 relative, which is why the
    // bf16 case runs one micro-batch.)
    compare(c.name, reference[key], *dir_ / ("pipe_" + c.name), c.micro == 1 ? 1e-6 : 1e-5);
    // Each rank holds its stage: the parameter bytes add up to one process's.
    const auto p1 = field(reference[key] / "metrics.jsonl", "parameter_bytes"),
               p2 = field(*dir_ / ("pipe_" + c.name) / "metrics.jsonl", "parameter_bytes");
    ASSERT_EQ(p2.size(), 1u);
    ASSERT_EQ(p2[0].size(), 2u);
    EXPECT_EQ(p2[0][0] + p2[0][1], p1[0][0]);
    // The bubble record: one idle share per stage, a share of the span.
    const auto idle = field(*dir_ / ("pipe_" + c.name) / "metrics.jsonl", "idle_share");
    ASSERT_EQ(idle.size(), 1u);
    ASSERT_EQ(idle[0].size(), 2u);
    for (double v : idle[0]) {
      EXPECT_GE(v, 0.0);
      EXPECT_LT(v, 1.0);
    }
  }
  // Stop at step 5 and resume: bit for bit the straight run; one process resumes the pipeline's
  // step-5 checkpoint as it resumes its own.
  const std::string vit = common + "--set model=" + (*dir_ / "model.yaml").string();
  const std::string pipe = "--nproc 2 --set dist.pipeline_stages=2 --set dist.micro_batches=2 ";
  auto r = run_cli(train("pipe_resumed", pipe + vit + " --stop-after 5"));
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli(train("pipe_resumed", pipe + vit + " --resume auto"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(losses(*dir_ / "pipe_resumed/metrics.jsonl"), losses(*dir_ / "pipe_vit_m2/metrics.jsonl"));
  EXPECT_EQ(max_diff(*dir_ / ("pipe_vit_m2/" + last + "model.safetensors"), *dir_ / ("pipe_resumed/" + last + "model.safetensors")), 0.0);
  r = run_cli(train("pipe_to_one", vit + " --resume " + (*dir_ / "pipe_vit_m2/checkpoints/step-00000005").string()));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_LT(max_diff(*dir_ / ("pipe_one_vit_m1/" + last + "model.safetensors"), *dir_ / ("pipe_to_one/" + last + "model.safetensors")), 1e-5);

  // Composition: 2 stages x 2 data-parallel replicas (4 processes, one thread each) equal 2
  // data-parallel ranks on the same data (each replica reads one rank's slice), negatives
  // gathered across the replicas' last stages; each stage's replicas stay bit-identical
  // (check_every: 1).
  const std::string dp = vit + " --set loss.gather_with_grad=true --set data.batch_size=4 ";
  r = run_cli(train("pipe_dp_ref", "--nproc 2 " + dp));
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli(train("pipe_dp", "--nproc 4 --set dist.pipeline_stages=2 --set dist.micro_batches=2 --set dist.check_every=1 " + dp));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("pipeline parallel: 2 stages x 2 data-parallel replicas"), std::string::npos) << r.out;
  compare("2 stages x 2 replicas", *dir_ / "pipe_dp_ref", *dir_ / "pipe_dp", 1e-5);
  r = run_cli(train("pipe_dp_resumed", "--nproc 4 --set dist.pipeline_stages=2 --set dist.micro_batches=2 " + dp + " --stop-after 5"));
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli(train("pipe_dp_resumed", "--nproc 4 --set dist.pipeline_stages=2 --set dist.micro_batches=2 " + dp + " --resume auto"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(losses(*dir_ / "pipe_dp_resumed/metrics.jsonl"), losses(*dir_ / "pipe_dp/metrics.jsonl"));
  EXPECT_EQ(max_diff(*dir_ / ("pipe_dp/" + last + "model.safetensors"), *dir_ / ("pipe_dp_resumed/" + last + "model.safetensors")), 0.0);

  // Impossible layouts: config errors (exit 3) naming the key, before any rank trains.
  expect_layout_errors("pipe_bad", {{"--nproc 3 --set dist.pipeline_stages=2", "dist.pipeline_stages"},
                                     {"--nproc 3 --set dist.pipeline_stages=3", "dist.pipeline_stages"},  // 3 stages, 2 blocks
                                     {"--nproc 2 --set dist.pipeline_stages=2 --set dist.micro_batches=3", "dist.micro_batches"},
                                     {"--nproc 2 --set dist.micro_batches=2", "dist.micro_batches"},
                                     {"--nproc 2 --set dist.pipeline_stages=2 --set dist.shard=optimizer", "dist.shard"},
                                     {"--nproc 2 --set dist.pipeline_stages=2 --set dist.towers=split", "dist.towers"},
                                     {"--nproc 2 --set dist.pipeline_stages=2 --set train.accum_steps=2", "train.accum_steps"}});
}

// torchrun (from the torch wheel setup installs) as the launcher: its agent serves the store.
TEST_F(DistTrain, TorchrunStartsTheRanks) {
  const int port = torchclip::dist::free_local_port();
  auto r = run_shell("python3 -m torch.distributed.run --nproc-per-node 2 --master-port " + std::to_string(port) +
                     " --no-python " + TORCHCLIP_BINARY + " " + train("torchrun", "--set train.steps=2"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("data parallel: 2 ranks (gloo backend, rendezvous 127.0.0.1:" + std::to_string(port)), std::string::npos)
      << r.out;
  EXPECT_TRUE(fs::exists(*dir_ / "torchrun/checkpoints/step-00000002")) << r.out;
}

// SIGTERM to the --nproc launcher reaches every rank: they stop at the same step, rank 0 saves a
// checkpoint, and the launcher exits with the interrupted code (5).
TEST_F(DistTrain, SigtermToTheLauncherStopsAllRanksWithACheckpoint) {
  const fs::path out = *dir_ / "sigterm";
  auto r = run_shell(std::string(TORCHCLIP_BINARY) + " " + train("sigterm", "--nproc 2 --set train.steps=100000") +
                     " > " + (*dir_ / "sigterm.log").string() + " 2>&1 & p=$!; for i in $(seq 300); do grep -q '\"step\": 3,' " +
                     (out / "metrics.jsonl").string() + " 2>/dev/null && break; sleep 0.1; done; kill -TERM $p; wait $p; echo \"exit=$?\"");
  EXPECT_NE(r.out.find("exit=5"), std::string::npos) << r.out;
  std::vector<fs::path> ckpts;
  for (const auto& e : fs::directory_iterator(out / "checkpoints")) ckpts.push_back(e.path());
  ASSERT_EQ(ckpts.size(), 1u);
  auto again = run_cli(train("sigterm", "--nproc 2 --resume auto --set train.steps=100000 --stop-after 1"));
  EXPECT_EQ(again.code, 0) << again.out;
  EXPECT_NE(again.out.find("resuming from " + ckpts[0].string()), std::string::npos) << again.out;
}

// Periodic evaluation and checkpoints run on rank 0 while rank 1 waits (store, not collective).
TEST_F(DistTrain, Rank0EvaluatesWhileTheOthersWait) {
  std::ofstream(*dir_ / "classes.txt") << "red\ngreen\nblue\ngrey\n";
  std::ofstream(*dir_ / "templates.txt") << "a {} square\n";
  auto r = run_cli(train("eval", "--nproc 2 --set data.val=" + (*dir_ / "d.csv").string() + " --set data.classes=" +
                                     (*dir_ / "classes.txt").string() + " --set data.templates=" +
                                     (*dir_ / "templates.txt").string() +
                                     " --set train.eval_every=2 --set train.checkpoint_every=2 --set dist.timeout_seconds=5"));
  ASSERT_EQ(r.code, 0) << r.out;
  size_t evals = 0;
  for (size_t p = r.out.find("eval at step"); p != std::string::npos; p = r.out.find("eval at step", p + 1)) ++evals;
  EXPECT_EQ(evals, 3u) << r.out;  // steps 2 and 4, then the final one, each printed once
}

TEST_F(DistTrain, LauncherRefusesToNestAndChecksTheConfigOnce) {
  auto r = run_shell("RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=1 " + std::string(TORCHCLIP_BINARY) + " " +
                     train("nest", "--nproc 2"));
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("--nproc starts its own ranks"), std::string::npos) << r.out;
  r = run_cli(train("badcfg", "--nproc 2 --set dist.backend=mpi"));
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("dist.backend"), std::string::npos) << r.out;
}

}  // namespace
