// The real `torchclip train` on a tiny dataset: exact resume after kill -9, corrupt checkpoints,
// signals, non-finite steps, bf16, evaluation output.
#include <ATen/Context.h>
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

namespace fs = std::filesystem;

#include "io/safetensors.h"
#include "support.h"
#include "util/json.h"

#include <ATen/ATen.h>

namespace {

using Run = torchclip::test::CliRun;
Run run(const std::string& args) { return torchclip::test::run_cli(args); }

/// A small image-caption dataset (two classes: dark and bright images) and a tiny model config.
class TrainFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("torchclip_train_" + std::to_string(getpid()) + "_" +
                                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
    fs::create_directories(dir / "img");
    std::ofstream csv(dir / "d.csv");
    csv << "filepath,title,label\n";
    for (int i = 0; i < 96; ++i) {
      const int cls = i % 2;
      cv::Mat m(16, 16, CV_8UC3, cv::Scalar(cls ? 220 : 30, (i * 7) % 255, cls ? 200 : 40));
      cv::imwrite((dir / "img" / (std::to_string(i) + ".png")).string(), m);
      csv << "img/" << i << ".png,\"a photo of a " << (cls ? "bright" : "dark") << " square number " << i << "\"," << cls << "\n";
    }
    std::ofstream(dir / "classes.txt") << "dark\nbright\n";
    std::ofstream(dir / "templates.txt") << "a photo of a {} square.\n";
    std::ofstream(dir / "model.yaml") << "embed_dim: 16\nvision_cfg: {image_size: 16, patch_size: 8, layers: 2, width: 32, head_width: 16}\n"
                                         "text_cfg: {context_length: 12, width: 32, heads: 2, layers: 2}\n";
    std::ofstream(dir / "train.yaml") << "model: " << (dir / "model.yaml").string() << "\n"
                                      << "data:\n  train: " << (dir / "d.csv").string() << "\n  val: " << (dir / "d.csv").string()
                                      << "\n  classes: " << (dir / "classes.txt").string() << "\n  templates: "
                                      << (dir / "templates.txt").string() << "\n  batch_size: 16\n  workers: 2\n"
                                      << "optim: {lr: 1.0e-3}\nschedule: {warmup_steps: 2}\n"
                                      << "train: {steps: 12, threads: 1, checkpoint_every: 2, keep_checkpoints: 10}\n";
  }
  void TearDown() override { fs::remove_all(dir); }

  std::string train(const std::string& out, const std::string& extra = "") {
    return "train --config " + (dir / "train.yaml").string() + " --out " + (dir / out).string() + " " + extra;
  }

  /// step -> the loss exactly as written (17 significant digits).
  std::map<int, std::string> losses(const std::string& out) {
    std::map<int, std::string> m;
    std::ifstream f(dir / out / "metrics.jsonl");
    for (std::string line; std::getline(f, line);) {
      if (line.find("\"loss\": ") == std::string::npos || line.find("\"eval\"") != std::string::npos) continue;
      const int step = std::stoi(line.substr(line.find("\"step\": ") + 8));
      const size_t p = line.find("\"loss\": ") + 8;
      m[step] = line.substr(p, line.find(',', p) - p);
    }
    return m;
  }

  /// Starts a training process and returns its pid (stdout/stderr to a log file).
  pid_t spawn(const std::string& args) {
    pid_t pid = fork();
    if (pid == 0) {
      const std::string cmd = std::string(TORCHCLIP_BINARY) + " " + args + " > " + (dir / "spawn.log").string() + " 2>&1";
      execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    return pid;
  }

  void wait_for_step(const std::string& out, int step) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (std::chrono::steady_clock::now() < deadline) {
      auto l = losses(out);
      if (!l.empty() && l.rbegin()->first >= step) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    FAIL() << "training never reached step " << step;
  }

  fs::path dir;
};

TEST_F(TrainFixture, KillMinus9ThenResumeIsBitExact) {
  auto straight = run(train("a"));
  ASSERT_EQ(straight.code, 0) << straight.out;
  auto expected = losses("a");
  ASSERT_EQ(expected.size(), 12u);

  pid_t pid = spawn(train("b"));
  wait_for_step("b", 5);
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  auto resumed = run(train("b", "--resume auto"));
  ASSERT_EQ(resumed.code, 0) << resumed.out;
  EXPECT_EQ(losses("b"), expected) << "resumed losses differ from the uninterrupted run";
  EXPECT_NE(resumed.out.find("resuming from"), std::string::npos);
  EXPECT_TRUE(fs::exists(dir / "b" / "plot.png"));
  EXPECT_NE(resumed.out.find("zeroshot_top1"), std::string::npos) << resumed.out;
}

TEST_F(TrainFixture, CorruptCheckpointIsDetectedAndSkipped) {
  ASSERT_EQ(run(train("c", "--set train.steps=4")).code, 0);
  auto newest = dir / "c" / "checkpoints" / "step-00000004" / "model.safetensors";
  ASSERT_TRUE(fs::exists(newest));
  {
    std::fstream f(newest, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(newest) - 5));
    f.put('\x7f');
  }
  auto r = run(train("c", "--set train.steps=6 --resume auto"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("step-00000004 is not usable: model.safetensors fails its CRC-32 check"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("step-00000002"), std::string::npos) << r.out;  // resumed from the one before
  // Starting fresh in a folder with checkpoints is refused rather than overwriting them.
  auto again = run(train("c"));
  EXPECT_NE(again.code, 0);
  EXPECT_NE(again.out.find("--resume auto"), std::string::npos) << again.out;
}

TEST_F(TrainFixture, ResumingPastTheRunsStepsIsAnErrorNotASuccess) {
  ASSERT_EQ(run(train("p", "--set train.steps=4 --set data.val=\"\"")).code, 0);
  auto r = run(train("p", "--set train.steps=2 --set data.val=\"\" --resume auto"));  // printed "4/2" and exited 0
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("is at step 4, past this run's 2 steps"), std::string::npos) << r.out;
}

TEST_F(TrainFixture, SigtermSavesACheckpointAndExitsWithCode5) {
  pid_t pid = spawn(train("s", "--set train.steps=100000 --set train.checkpoint_every=0"));
  wait_for_step("s", 2);
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 5);
  auto l = losses("s");
  const int last = l.rbegin()->first;
  char name[32];
  std::snprintf(name, sizeof name, "step-%08d", last);
  EXPECT_TRUE(fs::exists(dir / "s" / "checkpoints" / name / "MANIFEST")) << name;
}

TEST_F(TrainFixture, NonFiniteStepsAreSkippedThenTrainingStops) {
  // exp(1e4) overflows: every loss is infinite, no step may change anything.
  std::ofstream(dir / "model.yaml", std::ios::app) << "init_logit_scale: 10000\n";
  auto r = run(train("n", "--set train.max_nonfinite_steps=3"));
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("3 steps in a row had a non-finite loss or gradient"), std::string::npos) << r.out;
  // Three skipped steps logged, each with its (string) loss, and no completed step: no line has
  // a numeric loss.
  std::ifstream f(dir / "n" / "metrics.jsonl");
  int skipped = 0, completed = 0;
  for (std::string line; std::getline(f, line);) {
    skipped += line.find("\"skipped\": \"non-finite\"") != std::string::npos;
    completed += torchclip::json_find_number(line, "loss").has_value();
  }
  EXPECT_EQ(skipped, 3);
  EXPECT_EQ(completed, 0);
}

// The device is a config key like any other: on a machine or build without CUDA, asking for it
// stops before any work with the key named; auto trains on the CPU there.
TEST_F(TrainFixture, ACudaDeviceWithoutCudaIsAClearErrorAndAutoFallsBack) {
  if (at::hasCUDA()) GTEST_SKIP() << "this process has CUDA";
  auto r = run(train("cuda", "--set train.device=cuda"));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("train.device: \"cuda\" asked for, but this build or machine has no CUDA device"), std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(dir / "cuda" / "metrics.jsonl"));
  r = run(train("auto", "--set train.device=auto --set train.steps=2"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("device: cpu"), std::string::npos) << r.out;
  r = run("zeroshot --model " + (dir / "auto" / "checkpoints" / "step-00000002").string() + " --classes a,b --images " +
          (dir / "img" / "0.png").string() + " --device cuda:0");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("--device: \"cuda:0\" asked for"), std::string::npos) << r.out;
}

TEST_F(TrainFixture, Bf16TrainingMovesParametersAndEvalReadsTheModelFolder) {
  auto r = run(train("h", "--set train.precision=bf16 --set train.steps=6"));
  ASSERT_EQ(r.code, 0) << r.out;
  auto l = losses("h");
  ASSERT_EQ(l.size(), 6u);
  EXPECT_NE(l.begin()->second, l.rbegin()->second);
  // The weights changed between checkpoints (the autocast cache is cleared every step).
  auto w2 = dir / "h" / "checkpoints" / "step-00000002" / "model.safetensors";
  auto w6 = dir / "h" / "checkpoints" / "step-00000006" / "model.safetensors";
  std::ifstream a(w2, std::ios::binary), b(w6, std::ios::binary);
  std::string sa((std::istreambuf_iterator<char>(a)), {}), sb((std::istreambuf_iterator<char>(b)), {});
  EXPECT_EQ(sa.size(), sb.size());
  EXPECT_NE(sa, sb);
  auto e = run("eval --model " + (dir / "h" / "checkpoints" / "step-00000006").string() + " --data " + (dir / "d.csv").string() +
               " --classes " + (dir / "classes.txt").string() + " --templates " + (dir / "templates.txt").string() + " --json");
  ASSERT_EQ(e.code, 0) << e.out;
  EXPECT_NE(e.out.find("\"zeroshot_top1\""), std::string::npos) << e.out;
  EXPECT_NE(e.out.find("\"image_to_text_R@1\""), std::string::npos) << e.out;
}

TEST_F(TrainFixture, AccumulationEqualsOneLargeBatch) {
  // Two micro-batches of 8 with cached features (OpenCLIP's --accum-freq) take the same step as one
  // batch of 16 over the same samples: the loss is over all 16, so the gradients agree.
  const std::string common = "--set train.steps=1 --set train.checkpoint_every=0 --set data.val=\"\" --set schedule.warmup_steps=0";
  auto r = run(train("big", common + " --set data.batch_size=16"));
  ASSERT_EQ(r.code, 0) << r.out;
  r = run(train("acc", common + " --set data.batch_size=8 --set train.accum_steps=2"));
  ASSERT_EQ(r.code, 0) << r.out;
  auto big = torchclip::load_safetensors((dir / "big" / "checkpoints" / "step-00000001" / "model.safetensors").string());
  auto acc = torchclip::load_safetensors((dir / "acc" / "checkpoints" / "step-00000001" / "model.safetensors").string());
  auto init_loss = losses("big").at(1), acc_loss = losses("acc").at(1);
  EXPECT_NEAR(std::stod(init_loss), std::stod(acc_loss), 1e-5);
  double worst = 0;
  for (const auto& [k, v] : big.tensors) worst = std::max(worst, (v - acc.tensors.at(k)).abs().max().item<double>());
  // AdamW's first step moves each weight by lr * g / (|g| + eps): where a gradient is near
  // eps (1e-6) the summation-order differences of two batch layouts are magnified, so the bound
  // is 3% of one lr (1e-3) step, while every weight moves by up to a whole step (checked below).
  EXPECT_LT(worst, 3e-5) << "parameters after one step differ by " << worst;
  // And both moved away from the initialisation by far more than that.
  r = run(train("zero", common + " --set optim.lr=1e-12 --set data.batch_size=16"));
  ASSERT_EQ(r.code, 0) << r.out;
  auto init = torchclip::load_safetensors((dir / "zero" / "checkpoints" / "step-00000001" / "model.safetensors").string());
  double moved = 0;
  for (const auto& [k, v] : big.tensors) moved = std::max(moved, (v - init.tensors.at(k)).abs().max().item<double>());
  EXPECT_GT(moved, 1e-4);
}

TEST_F(TrainFixture, TrainingFromAPackedTensorFileAndNormalizingOnTheDeviceGiveTheSameLosses) {
  // The images are 16x16 and the model's image_size is 16, so the packed pixels are the PNGs'
  // and every crop, caption and order is the same: the losses must agree to the last digit.
  const std::string pack = (dir / "d.safetensors").string();
  auto p = run("data pack --data " + (dir / "d.csv").string() + " --csv-label-key label --image-size 16 --out " + pack + " --json");
  ASSERT_EQ(p.code, 0) << p.out;
  EXPECT_NE(p.out.find("\"images\": 96, \"skipped\": 0"), std::string::npos) << p.out;
  const std::string common = "--set train.steps=4 --set train.checkpoint_every=0";
  auto r = run(train("csv", common + " --set data.normalize=worker"));
  ASSERT_EQ(r.code, 0) << r.out;
  r = run(train("dev", common + " --set data.normalize=device"));
  ASSERT_EQ(r.code, 0) << r.out;
  r = run(train("pack", common + " --set data.normalize=device --set data.train=" + pack + " --set data.val=" + pack));
  ASSERT_EQ(r.code, 0) << r.out;
  const auto want = losses("csv");
  ASSERT_EQ(want.size(), 4u);
  EXPECT_EQ(losses("dev"), want);
  EXPECT_EQ(losses("pack"), want);
  // A file that is not a pack is refused, naming it.
  std::ofstream(dir / "x.safetensors") << "junk";
  r = run(train("bad", common + " --set data.train=" + (dir / "x.safetensors").string()));
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("x.safetensors"), std::string::npos) << r.out;
}

}  // namespace
