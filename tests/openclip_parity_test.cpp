// Our towers are the same function as open_clip's: randomly initialised open_clip models are
// converted and run on the same inputs; every output must agree within 1e-5 (fp32, CPU).
#include "io/safetensors.h"
#include "train/checkpoint.h"
#include "train/convert.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

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
