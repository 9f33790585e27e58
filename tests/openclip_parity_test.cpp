// Our towers are the same function as open_clip's: randomly initialised open_clip models are
// converted and run on the same inputs; every output must agree within 1e-5 (fp32, CPU).
#include "data/image.h"
#include "data/transform.h"
#include "eval/evaluate.h"
#include "eval/retrieval.h"
#include "eval/zeroshot.h"
#include "interop/openclip.h"
#include "io/fsutil.h"
#include "io/safetensors.h"
#include "model/model_dir.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <opencv2/core.hpp>

#include <algorithm>
#include <filesystem>
#include <iostream>

#include "support.h"

namespace torchclip {
namespace {

class OpenClipParity : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::filesystem::path(test::temp_dir("parity"));
    const std::string cmd = "python3 " TORCHCLIP_SOURCE_DIR "/tests/golden/make_openclip_parity.py " + dir_->string() +
                            " ViT-B-32 ViT-B-16 RN50 ViT-B-32-quickgelu > " + (*dir_ / "python.log").string() + " 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << "open_clip reference failed; see " << (*dir_ / "python.log").string();
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  static std::filesystem::path* dir_;
};
std::filesystem::path* OpenClipParity::dir_ = nullptr;

double max_abs(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

TEST_P(OpenClipParity, EmbeddingsAndLogitsMatch) {
  const std::string name = GetParam();
  const auto model_dir = (*dir_ / (name + "-model")).string();
  convert_openclip(openclip_model_config(name), (*dir_ / (name + ".safetensors")).string(), model_dir);
  auto m = load_model_dir(model_dir);
  auto io = load_safetensors((*dir_ / (name + ".io.safetensors")).string()).tensors;
  torch::NoGradGuard g;
  auto img = m.model->encode_image(io.at("images"));
  auto txt = m.model->encode_text(io.at("texts"));
  auto logits = m.model->logits(l2_normalize(img), l2_normalize(txt));
  const double di = max_abs(img, io.at("image_features")), dt = max_abs(txt, io.at("text_features")),
               dl = max_abs(logits, io.at("logits_per_image"));
  std::cout << "[ parity ] " << name << ": max |diff| image " << di << ", text " << dt << ", logits " << dl << "\n";
  EXPECT_LT(di, 1e-5);
  EXPECT_LT(dt, 1e-5);
  EXPECT_LT(dl, 1e-5);
  // Round trip: our export loads into open_clip (strictly) and gives the same outputs again.
  const std::string prefix = (*dir_ / (name + "-export")).string();
  export_openclip(model_dir, prefix);
  const std::string cmd = "python3 " TORCHCLIP_SOURCE_DIR "/tests/golden/check_openclip_roundtrip.py " + prefix + " " +
                          (*dir_ / (name + ".io.safetensors")).string();
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::filesystem::remove_all(model_dir);
  std::filesystem::remove(prefix + ".safetensors");
  // Another image size: the position grid is resized exactly as open_clip's resize_pos_embed.
  if (io.count("positional_embedding_320")) {
    convert_openclip(openclip_model_config(name), (*dir_ / (name + ".safetensors")).string(), model_dir, 320);
    auto big = load_model_dir(model_dir);
    const double dp = max_abs(state_dict(*big.model).at("visual.positional_embedding"), io.at("positional_embedding_320"));
    std::cout << "[ parity ] " << name << " at 320 px: max |diff| of the resized position grid " << dp << "\n";
    EXPECT_LT(dp, 1e-5);
    EXPECT_EQ(big.model->encode_image(at::randn({1, 3, 320, 320})).size(1), big.config.embed_dim());
    std::filesystem::remove_all(model_dir);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, OpenClipParity, ::testing::Values("ViT-B-32", "ViT-B-16", "RN50", "ViT-B-32-quickgelu"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

TEST_F(OpenClipParity, PickleCheckpointThroughTheModelsConverter) {
  // An OpenCLIP training checkpoint ({'epoch', 'state_dict'}) -> safetensors -> model folder.
  const auto st = (*dir_ / "RN50-from-pickle.safetensors").string();
  const std::string cmd = "python3 " TORCHCLIP_SOURCE_DIR "/models/convert_openclip_pickle.py --model RN50 --checkpoint " +
                          (*dir_ / "RN50.pt").string() + " --out " + st + " > /dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const auto model_dir = (*dir_ / "RN50-pickle-model").string();
  convert_openclip(openclip_model_config("RN50"), st, model_dir);
  auto m = load_model_dir(model_dir);
  auto io = load_safetensors((*dir_ / "RN50.io.safetensors").string()).tensors;
  torch::NoGradGuard g;
  EXPECT_LT(max_abs(m.model->encode_image(io.at("images")), io.at("image_features")), 1e-5);
  EXPECT_LT(max_abs(m.model->encode_text(io.at("texts")), io.at("text_features")), 1e-5);
  std::filesystem::remove_all(model_dir);
}

/// Our eval transform against open_clip's PIL `preprocess` on real photos (data/photos, unpacked
/// by scripts/setup.sh): in "pil" mode the pixels are the same bytes, so embeddings and zero-shot
/// probabilities of a converted model equal open_clip's; "fast" (OpenCV) is measured and printed.
TEST_F(OpenClipParity, PreprocessingAndZeroShotMatchOnRealPhotos) {
  const std::filesystem::path photos = TORCHCLIP_SOURCE_DIR "/data/photos";
  ASSERT_TRUE(std::filesystem::exists(photos / ".complete")) << photos << " is missing: run scripts/setup.sh";
  std::vector<std::string> images;
  for (const auto& e : std::filesystem::directory_iterator(photos))
    if (e.path().filename().string()[0] != '.') images.push_back(e.path().string());
  std::sort(images.begin(), images.end());
  std::string cmd = "python3 " TORCHCLIP_SOURCE_DIR "/tests/golden/make_preprocess_parity.py " + dir_->string() + " ViT-B-32";
  for (const auto& p : images) cmd += " " + p;
  ASSERT_EQ(std::system((cmd + " > " + (*dir_ / "preprocess.log").string() + " 2>&1").c_str()), 0) << cmd;
  auto ref = load_safetensors((*dir_ / "preprocess.safetensors").string()).tensors;
  const auto model_dir = (*dir_ / "ViT-B-32-zeroshot").string();
  convert_openclip(openclip_model_config("ViT-B-32"), (*dir_ / "ViT-B-32.safetensors").string(), model_dir);
  auto m = load_model_dir(model_dir);
  const auto classes = read_lines((*dir_ / "preprocess.classes.txt").string());
  const auto templates = read_lines((*dir_ / "preprocess.templates.txt").string());
  torch::NoGradGuard g;
  auto classifier = zero_shot_classifier(m.model, *m.tokenizer, classes, templates, m.config.text_cfg().context_length());
  EXPECT_LT(max_abs(classifier, ref.at("classifier")), 1e-5);
  // Normalised pixel differences back to 8-bit levels: |d| * std * 255.
  auto levels = at::tensor(std::vector<double>{0.26862954, 0.26130258, 0.27577711}).to(at::kFloat).view({3, 1, 1}) * 255.0;
  for (auto mode : {ResizeMode::kPil, ResizeMode::kFast}) {
    auto opts = data::ImageTransformOptions().image_size(m.config.vision_cfg().image_size()).resize(mode);
    std::mt19937_64 rng(0);
    auto pixels = at::empty_like(ref.at("pixels"));
    for (size_t i = 0; i < images.size(); ++i) {
      auto out = pixels[static_cast<int64_t>(i)];
      data::transform_image(data::decode_image(read_file(images[i])), opts, rng, out);
    }
    auto diff = ((pixels - ref.at("pixels")).abs() * levels).round();  // [N, 3, S, S] in levels
    auto feats = l2_normalize(m.model->encode_image(pixels));
    auto probs = (100.0 * feats.matmul(classifier)).softmax(-1);
    const double max_level = diff.max().item<double>(), mean_level = diff.mean().item<double>();
    const double share_exact = diff.eq(0).to(at::kDouble).mean().item<double>();
    const double d_feat = max_abs(feats, ref.at("image_features")), d_prob = max_abs(probs, ref.at("probs"));
    const int64_t same_top1 = probs.argmax(-1).eq(ref.at("probs").argmax(-1)).sum().item<int64_t>();
    std::cout << "[ preprocess ] " << enum_name(mode) << ": " << images.size() << " photos, pixels max |diff| "
              << max_level << " levels, mean " << mean_level << ", identical " << 100 * share_exact
              << "%; image embedding max |diff| " << d_feat << "; zero-shot probs max |diff| " << d_prob << ", same top-1 "
              << same_top1 << "/" << images.size() << "\n";
    for (size_t i = 0; i < images.size(); ++i)
      std::cout << "    " << std::filesystem::path(images[i]).filename().string() << ": max "
                << diff[static_cast<int64_t>(i)].max().item<double>() << " levels, mean "
                << diff[static_cast<int64_t>(i)].mean().item<double>() << "\n";
    if (mode == ResizeMode::kPil) {
      EXPECT_EQ(max_level, 0) << "the PIL-compatible resize must reproduce open_clip's preprocess byte for byte";
      EXPECT_LT(d_feat, 1e-5);
      EXPECT_LT(d_prob, 1e-5);
      EXPECT_EQ(same_top1, static_cast<int64_t>(images.size()));
    }
  }
  std::filesystem::remove_all(model_dir);
}

// Retrieval metrics are open_clip's values (get_clip_metrics), not only its names: on distinct
// features, and on a set where half the captions repeat another's text, where a pair tied with
// a duplicate is ranked as a stable descending argsort ranks it.
TEST(RetrievalMetrics, MatchOpenClipGetClipMetrics) {
  const auto dir = test::temp_dir("retrieval");
  const std::string cmd = "python3 " TORCHCLIP_SOURCE_DIR "/tests/golden/make_retrieval_metrics.py " + dir.string() +
                          " > " + (dir / "python.log").string() + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "open_clip reference failed; see " << (dir / "python.log").string();
  auto f = load_safetensors((dir / "retrieval.safetensors").string()).tensors;
  YAML::Node ref = YAML::LoadFile((dir / "retrieval.json").string());
  auto compare = [&](const std::string& set, const std::string& reference) {
    auto ours = retrieval_metrics(f.at("image_" + set), f.at("text_" + set), /*chunk=*/128);  // several chunks
    ASSERT_EQ(ours.size(), ref[reference].size()) << reference;
    for (const auto& kv : ref[reference]) {
      const auto key = kv.first.as<std::string>();
      ASSERT_TRUE(ours.count(key)) << key;
      EXPECT_NEAR(ours.at(key), kv.second.as<double>(), 1e-12) << reference << " " << key;
    }
    std::cout << "[ retrieval ] " << set << ": image_to_text_R@1 " << ours.at("image_to_text_R@1") << " (open_clip "
              << ref[reference]["image_to_text_R@1"].as<double>() << "), median rank "
              << ours.at("image_to_text_median_rank") << "\n";
  };
  compare("distinct", "distinct");
  compare("duplicates", "duplicates_stable");
  EXPECT_EQ(ref["duplicate_rows"].as<int>(), 150);
  // The rule this replaced counted a pair as found when no candidate scored strictly higher, so
  // every duplicate caption counted for both of its images: an optimistic figure.
  const auto& img = f.at("image_duplicates");
  const auto& txt = f.at("text_duplicates");
  auto sims = at::matmul(img, txt.t());                                       // [N, N]
  auto own = sims.diagonal().unsqueeze(1);                                     // [N, 1]
  const double strict_r1 = sims.gt(own).sum(1).eq(0).to(at::kDouble).mean().item<double>();
  std::cout << "[ retrieval ] duplicates: strictly-higher rule would report image_to_text_R@1 " << strict_r1 << "\n";
  EXPECT_GT(strict_r1, ref["duplicates_openclip"]["image_to_text_R@1"].as<double>() + 0.05);
  std::filesystem::remove_all(dir);
}

TEST(Convert, MisShapedAndUnexpectedTensorsAreNamed) {
  auto dir = test::temp_dir("convert_err");
  auto cfg = load_model_config("tiny");
  CLIP model(cfg);
  auto sd = state_dict(*model);
  sd["visual.proj"] = at::zeros({3, 3});
  sd["extra.weight"] = at::zeros({1});
  sd.erase("ln_final.bias");
  save_safetensors((dir / "w.safetensors").string(), sd);
  try {
    convert_openclip(cfg, (dir / "w.safetensors").string(), (dir / "out").string());
    FAIL();
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("missing ln_final.bias"), std::string::npos) << m;
    EXPECT_NE(m.find("unexpected extra.weight"), std::string::npos) << m;
    EXPECT_NE(m.find("visual.proj (file [3, 3], model [96, 64])"), std::string::npos) << m;
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace torchclip
