// Tests that need a CUDA device (`ctest -L cuda`): each compares CUDA against the CPU. Without a
// device every test is skipped with a message, so the file builds and runs everywhere; the GPU
// check (scripts/gpu_check.sh) runs it where there is one. No OpenCV: data are tensor files.
#include "config/train_config.h"
#include "data/loader.h"
#include "data/source.h"
#include "eval/evaluate.h"
#include "io/fsutil.h"
#include "io/safetensors.h"
#include "loss/loss.h"
#include "model/clip.h"
#include "model/model_dir.h"
#include "train/trainer.h"
#include "util/json.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>
#include <yaml-cpp/yaml.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "support.h"

namespace torchclip {
namespace {
namespace fs = std::filesystem;

#define REQUIRE_CUDA()                                                                       \
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device in this build or on this machine (ctest -L cuda " \
                                      "needs a GPU; scripts/gpu_check.sh runs it)"

/// fp32 matmuls in full precision while a test compares against the CPU.
struct NoTf32 {
  bool blas = at::globalContext().allowTF32CuBLAS(), dnn = at::globalContext().allowTF32CuDNN();
  NoTf32() {
    at::globalContext().setAllowTF32CuBLAS(false);
    at::globalContext().setAllowTF32CuDNN(false);
  }
  ~NoTf32() {
    at::globalContext().setAllowTF32CuBLAS(blas);
    at::globalContext().setAllowTF32CuDNN(dnn);
  }
};

const char* kVit =
    "embed_dim: 32\nvision_cfg: {image_size: 32, patch_size: 8, layers: 2, width: 64, head_width: 32}\n"
    "text_cfg: {context_length: 16, width: 64, heads: 2, layers: 2}\n";
const char* kResNet =
    "embed_dim: 32\nvision_cfg: {image_size: 64, layers: [1, 1, 1, 1], width: 16, head_width: 16}\n"
    "text_cfg: {context_length: 16, width: 64, heads: 2, layers: 2}\n";

CLIP make_model(const char* yaml, uint64_t seed) {
  at::manual_seed(seed);
  return CLIP(parse_model_config(YAML::Load(yaml), "test"));
}

TEST(Cuda, TowersForwardAndBackwardMatchTheCpu) {
  REQUIRE_CUDA();
  NoTf32 exact;
  for (const char* yaml : {kVit, kResNet}) {
    CLIP cpu = make_model(yaml, 0), gpu = make_model(yaml, 0);
    gpu->to(at::kCUDA);
    const int64_t S = cpu->config.vision_cfg().image_size();
    auto gen = at::detail::createCPUGenerator(1);
    const at::Tensor images = at::randn({4, 3, S, S}, gen);             // [B, 3, S, S]
    const at::Tensor ids = test::ids_with_eot({5, 9, 3, 15}, 16, 49408);  // [B, T]
    const at::Tensor wi = at::randn({4, 32}, gen), wt = at::randn({4, 32}, gen);
    auto a = cpu->forward(images, ids);
    auto b = gpu->forward(images.cuda(), ids.cuda());
    // fp32 on both; kernels sum in different orders: 1e-4 absolute on unit-norm features.
    EXPECT_TRUE(test::all_close(b.image_features.cpu(), a.image_features, 1e-4, 1e-3)) << yaml;
    EXPECT_TRUE(test::all_close(b.text_features.cpu(), a.text_features, 1e-4, 1e-3)) << yaml;
    ((a.image_features * wi).sum() + (a.text_features * wt).sum()).backward();
    ((b.image_features * wi.cuda()).sum() + (b.text_features * wt.cuda()).sum()).backward();
    auto pc = cpu->named_parameters(), pg = gpu->named_parameters();
    for (const auto& p : pc) {
      const at::Tensor& gc = p.value().grad();
      if (!gc.defined()) continue;
      // Gradients accumulate over the batch and the sequence: 1e-3 relative to the largest.
      const double scale = std::max(1e-6, gc.abs().max().item<double>());
      EXPECT_TRUE(test::all_close(pg[p.key()].grad().cpu() / scale, gc / scale, 1e-3, 0)) << yaml << " " << p.key();
    }
  }
}

TEST(Cuda, EveryLossForwardAndBackwardMatchesTheCpu) {
  REQUIRE_CUDA();
  NoTf32 exact;
  auto gen = at::detail::createCPUGenerator(2);
  const at::Tensor img = l2_normalize(at::randn({8, 16}, gen)), txt = l2_normalize(at::randn({8, 16}, gen));
  for (const auto& name : loss_names()) {
    auto run = [&](const c10::Device& d, at::Tensor& gi, at::Tensor& gt) {
      at::Tensor i = img.to(d).requires_grad_(true), t = txt.to(d).requires_grad_(true);
      LossInput in{i, t, at::full({}, 10.0, at::TensorOptions().device(d)), at::full({}, -10.0, at::TensorOptions().device(d))};
      at::Tensor loss = make_loss(name)->forward(in);
      loss.backward();
      gi = i.grad().cpu();
      gt = t.grad().cpu();
      return loss.item<double>();
    };
    at::Tensor gic, gtc, gig, gtg;
    const double lc = run(at::kCPU, gic, gtc), lg = run(at::kCUDA, gig, gtg);
    EXPECT_NEAR(lg, lc, 1e-5 * std::max(1.0, std::abs(lc))) << name;
    EXPECT_TRUE(test::all_close(gig, gic, 1e-5, 1e-4)) << name;
    EXPECT_TRUE(test::all_close(gtg, gtc, 1e-5, 1e-4)) << name;
  }
}

/// A tensor file of `n` random 32x32 images in 4 classes whose captions name the class.
std::string write_pack(const fs::path& dir, int64_t n) {
  const std::string path = (dir / "data.safetensors").string();
  auto gen = at::detail::createCPUGenerator(3);
  at::Tensor images = at::randint(0, 256, {n, 32, 32, 3}, gen, at::kByte);
  std::string captions;
  std::vector<int64_t> offsets{0}, labels;
  static const char* names[] = {"red", "green", "blue", "grey"};
  for (int64_t i = 0; i < n; ++i) {
    images[i].select(2, i % 3).add_(60);  // a class signal the model can learn
    captions += fmt::format("a photo of a {} square number {}", names[i % 4], i);
    offsets.push_back(static_cast<int64_t>(captions.size()));
    labels.push_back(i % 4);
  }
  at::Tensor bytes = at::empty({static_cast<int64_t>(captions.size())}, at::kByte);
  std::memcpy(bytes.data_ptr(), captions.data(), captions.size());
  save_safetensors(path,
                   {{"images", images},
                    {"caption_bytes", bytes},
                    {"caption_offsets", at::tensor(offsets, at::kLong)},
                    {"labels", at::tensor(labels, at::kLong)}},
                   {{"format", data::kPackFormat}, {"image_size", "32"}});
  std::ofstream(dir / "classes.txt") << "red\ngreen\nblue\ngrey\n";
  std::ofstream(dir / "templates.txt") << "a photo of a {} square.\n";
  std::ofstream(dir / "model.yaml") << kVit;
  return path;
}

struct CudaTraining : ::testing::Test {
  fs::path dir;
  std::string pack;
  void SetUp() override {
    if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device in this build or on this machine";
    dir = test::temp_dir(std::string("cuda_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    pack = write_pack(dir, 128);
  }
  void TearDown() override {
    if (!dir.empty()) fs::remove_all(dir);
  }
  TrainConfig config(const std::string& device, std::vector<std::string> extra = {}) {
    std::ofstream(dir / "train.yaml") << "model: " << (dir / "model.yaml").string() << "\ndata:\n  train: " << pack
                                      << "\n  batch_size: 16\n  workers: 2\n  normalize: device\n"
                                      << "optim: {lr: 1.0e-3}\nschedule: {warmup_steps: 2}\n"
                                      << "train: {steps: 20, threads: 2, checkpoint_every: 2, keep_checkpoints: 20, tf32: false}\n";
    extra.push_back("train.device=" + device);
    return load_train_config((dir / "train.yaml").string(), extra);
  }
  std::map<int, double> losses(const std::string& run) {
    std::map<int, double> m;
    std::ifstream f(dir / run / "metrics.jsonl");
    for (std::string line; std::getline(f, line);) {
      const auto step = json_find_number(line, "step"), loss = json_find_number(line, "loss");
      if (line.find("\"eval\"") != std::string::npos || !step || !loss) continue;
      m[static_cast<int>(*step)] = *loss;
    }
    return m;
  }
  std::string out(const std::string& run) { return (dir / run).string(); }
};

TEST_F(CudaTraining, TwentyStepsOnCudaFollowTheCpu) {
  NoTf32 exact;
  train(config("cpu"), TrainRunOptions().out_dir(out("cpu")).progress(false));
  train(config("cuda"), TrainRunOptions().out_dir(out("cuda")).progress(false));
  const auto c = losses("cpu"), g = losses("cuda");
  ASSERT_EQ(c.size(), 20u);
  ASSERT_EQ(g.size(), 20u);
  // Summation order differs per kernel; AdamW amplifies tiny gradient differences a little each
  // step: 2e-3 relative on the loss over 20 steps, parameters within 20 steps x lr.
  for (const auto& [step, loss] : c) EXPECT_NEAR(g.at(step), loss, 2e-3 * std::abs(loss)) << "step " << step;
  auto a = load_safetensors(out("cpu") + "/checkpoints/step-00000020/model.safetensors");
  auto b = load_safetensors(out("cuda") + "/checkpoints/step-00000020/model.safetensors");
  for (const auto& [k, v] : a.tensors) EXPECT_TRUE(test::all_close(b.tensors.at(k), v, 20 * 1e-3, 0)) << k;
}

TEST_F(CudaTraining, Bf16TrainingMovesTheWeights) {
  train(config("cuda", {"train.precision=bf16", "train.steps=6"}), TrainRunOptions().out_dir(out("bf16")).progress(false));
  train(config("cuda", {"train.precision=bf16", "train.steps=6", "optim.lr=1e-12"}),
        TrainRunOptions().out_dir(out("still")).progress(false));
  auto moved = load_safetensors(out("bf16") + "/checkpoints/step-00000006/model.safetensors");
  auto still = load_safetensors(out("still") + "/checkpoints/step-00000006/model.safetensors");
  double most = 0;
  for (const auto& [k, v] : moved.tensors) most = std::max(most, (v - still.tensors.at(k)).abs().max().item<double>());
  EXPECT_GT(most, 1e-4);
  for (const auto& [step, loss] : losses("bf16")) EXPECT_TRUE(std::isfinite(loss)) << "step " << step;
}

TEST_F(CudaTraining, ACheckpointWrittenOnCudaResumesOnCudaAndOnTheCpu) {
  NoTf32 exact;
  train(config("cuda", {"train.steps=8"}), TrainRunOptions().out_dir(out("straight")).progress(false));
  train(config("cuda", {"train.steps=8"}), TrainRunOptions().out_dir(out("gpu")).progress(false).stop_after(4));
  fs::copy(out("gpu"), out("cpu"), fs::copy_options::recursive);
  train(config("cuda", {"train.steps=8"}), TrainRunOptions().out_dir(out("gpu")).resume("auto").progress(false));
  train(config("cpu", {"train.steps=8"}), TrainRunOptions().out_dir(out("cpu")).resume("auto").progress(false));
  const auto want = losses("straight"), gpu = losses("gpu"), cpu = losses("cpu");
  for (int step = 5; step <= 8; ++step) {
    // The same GPU and kernels: equal up to atomics in the embedding backward (1e-5); the CPU
    // continues the same optimizer state with its own summation order (2e-3).
    EXPECT_NEAR(gpu.at(step), want.at(step), 1e-5 * std::abs(want.at(step))) << "step " << step;
    EXPECT_NEAR(cpu.at(step), want.at(step), 2e-3 * std::abs(want.at(step))) << "step " << step;
  }
}

TEST_F(CudaTraining, EvaluationAndEmbeddingsOnCudaGiveTheCpuResults) {
  NoTf32 exact;
  train(config("cuda", {"train.steps=10"}), TrainRunOptions().out_dir(out("m")).progress(false));
  const std::string model_dir = out("m") + "/checkpoints/step-00000010";
  auto classes = read_lines((dir / "classes.txt").string()), templates = read_lines((dir / "templates.txt").string());
  std::map<std::string, double> metrics[2];
  at::Tensor features[2];
  for (int d = 0; d < 2; ++d) {
    LoadedModel m = load_model_dir(model_dir, d ? c10::Device(at::kCUDA) : c10::Device(at::kCPU));
    data::Loader loader(data::open_source(pack), m.tokenizer, inference_loader_options(m.config, 64, 2, ResizeMode::kPil));
    metrics[d] = evaluate(m.model, *m.tokenizer, loader, classes, templates, false, false).metrics;
    data::Loader again(data::open_source(pack), m.tokenizer, inference_loader_options(m.config, 64, 2, ResizeMode::kPil));
    features[d] = embed_images(m.model, again, false).features.cpu();
  }
  EXPECT_TRUE(test::all_close(features[1], features[0], 1e-4, 1e-3));
  for (const auto& [k, v] : metrics[0]) EXPECT_NEAR(metrics[1].at(k), v, 2.0 / 128) << k;  // at most a near-tie flips
}

}  // namespace
}  // namespace torchclip
