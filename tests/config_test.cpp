#include "config/emit.h"
#include "config/loss_config.h"
#include "config/model_config.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <fstream>

#include "support.h"

namespace torchclip {
namespace {

std::string error_of(const std::function<void()>& fn) { return test::error_of<ConfigError>(fn); }

ModelConfig parse(const std::string& yaml) { return parse_model_config(YAML::Load(yaml), "test.yaml"); }

TEST(ModelConfig, EveryShippedConfigLoadsAndValidates) {
  auto names = model_config_names();
  for (const char* required : {"tiny", "ViT-B-32", "ViT-B-16", "ViT-S-32-alt", "RN50", "RN101"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), required), names.end()) << required;
  }
  for (const auto& n : names) EXPECT_NO_THROW(load_model_config(n)) << n;
}

TEST(ModelConfig, ReadsOpenClipFieldsAndDefaults) {
  auto c = load_model_config("RN50");
  EXPECT_EQ(c.embed_dim(), 1024);
  EXPECT_TRUE(c.vision_cfg().is_resnet());
  EXPECT_EQ(c.vision_cfg().layers(), (std::vector<int64_t>{3, 4, 6, 3}));
  EXPECT_EQ(c.vision_cfg().heads(), 32);  // width * 32 / head_width = 64 * 32 / 64
  EXPECT_EQ(c.text_cfg().context_length(), 77);
  EXPECT_NEAR(c.init_logit_scale(), std::log(1 / 0.07), 1e-12);
  auto v = load_model_config("ViT-B-32");
  EXPECT_EQ(v.vision_cfg().heads(), 12);
  EXPECT_EQ(v.vision_cfg().grid_size(), 7);
  EXPECT_FALSE(v.quick_gelu());
  EXPECT_TRUE(load_model_config("ViT-B-32-quickgelu").quick_gelu());
}

TEST(ModelConfig, UnknownKeyNamesFileLineKeyAndValidKeys) {
  auto msg = error_of([] { parse("embed_dim: 8\nvision_cfg:\n  widht: 64\n"); });
  EXPECT_NE(msg.find("test.yaml:3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("vision_cfg.widht"), std::string::npos) << msg;
  EXPECT_NE(msg.find("width"), std::string::npos) << msg;  // the valid keys are listed
  msg = error_of([] { parse("embed_dmi: 8\n"); });
  EXPECT_NE(msg.find("unknown key 'embed_dmi'"), std::string::npos) << msg;
}

TEST(ModelConfig, WrongTypeNamesKeyAndExpectedType) {
  auto msg = error_of([] { parse("text_cfg:\n  width: wide\n"); });
  EXPECT_NE(msg.find("test.yaml:2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("text_cfg.width"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected an integer"), std::string::npos) << msg;
  msg = error_of([] { parse("quick_gelu: [1, 2]\n"); });
  EXPECT_NE(msg.find("expected true or false"), std::string::npos) << msg;
  msg = error_of([] { parse("- 1\n- 2\n"); });
  EXPECT_NE(msg.find("expected a mapping"), std::string::npos) << msg;
}

TEST(ModelConfig, ImpossibleValuesAreRejectedWithTheRule) {
  auto msg = error_of([] { parse("text_cfg:\n  width: 100\n  heads: 8\n"); });
  EXPECT_NE(msg.find("text_cfg.heads"), std::string::npos) << msg;
  EXPECT_NE(msg.find("must divide text_cfg.width = 100"), std::string::npos) << msg;
  msg = error_of([] { parse("vision_cfg:\n  width: 100\n"); });
  EXPECT_NE(msg.find("vision_cfg.head_width"), std::string::npos) << msg;
  msg = error_of([] { parse("vision_cfg:\n  image_size: 100\n  patch_size: 16\n"); });
  EXPECT_NE(msg.find("multiple of patch_size"), std::string::npos) << msg;
  msg = error_of([] { parse("vision_cfg:\n  layers: [1, 2, 3]\n"); });
  EXPECT_NE(msg.find("one integer (ViT depth) or four"), std::string::npos) << msg;
  msg = error_of([] { parse("embed_dim: 0\n"); });
  EXPECT_NE(msg.find("embed_dim: must be an integer in [1, 65536]"), std::string::npos) << msg;
  msg = error_of([] { parse("vision_cfg:\n  patch_dropout: 1.0\n"); });
  EXPECT_NE(msg.find("[0, 1)"), std::string::npos) << msg;
}

TEST(ModelConfig, ChoicesAreListed) {
  auto msg = error_of([] { parse("text_cfg:\n  pool_type: mean\n"); });
  EXPECT_NE(msg.find("\"mean\" is not one of: argmax, eos, first, last"), std::string::npos) << msg;
  msg = error_of([] { parse("vision_cfg:\n  pool_type: max\n"); });
  EXPECT_NE(msg.find("tok, avg"), std::string::npos) << msg;
}

TEST(ModelConfig, UnsupportedOpenClipFeaturesAreRefusedButInertDefaultsAccepted) {
  EXPECT_NO_THROW(parse("vision_cfg:\n  attentional_pool: false\n  qk_norm: false\n  timm_model_name: null\n"));
  auto msg = error_of([] { parse("vision_cfg:\n  timm_model_name: vit_base_patch16_224\n"); });
  EXPECT_NE(msg.find("a timm image tower is not supported"), std::string::npos) << msg;
  msg = error_of([] { parse("text_cfg:\n  hf_model_name: roberta-base\n"); });
  EXPECT_NE(msg.find("not supported"), std::string::npos) << msg;
}

TEST(ModelConfig, UnknownNameListsKnownNames) {
  auto msg = error_of([] { load_model_config("ViT-Q-99"); });
  EXPECT_NE(msg.find("ViT-Q-99"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ViT-B-32"), std::string::npos) << msg;
  EXPECT_NE(msg.find("tiny"), std::string::npos) << msg;
}

TEST(ModelConfig, InvalidYamlNamesLine) {
  auto dir = test::temp_dir("config");
  auto path = (dir / "broken.yaml").string();
  std::ofstream(path) << "embed_dim: 8\nvision_cfg: [1,\n";
  auto msg = error_of([&] { load_model_config(path); });
  EXPECT_NE(msg.find("broken.yaml"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not valid YAML"), std::string::npos) << msg;
  std::filesystem::remove_all(dir);
}

TEST(ModelConfig, EffectiveYamlRoundTrips) {
  for (const auto& n : model_config_names()) {
    auto c = load_model_config(n);
    auto again = parse_model_config(YAML::Load(to_yaml(c)), "effective");
    EXPECT_EQ(to_yaml(again), to_yaml(c)) << n;
  }
  auto c = parse("init_logit_bias: -10\ntext_cfg:\n  pos_embed_type: sinusoidal\n");
  ASSERT_TRUE(c.init_logit_bias().has_value());
  EXPECT_EQ(*c.init_logit_bias(), -10);
  EXPECT_EQ(parse_model_config(YAML::Load(to_yaml(c)), "x").text_cfg().pos_embed_type(), PosEmbed::kSinusoidal);
}

TEST(LossConfig, ParsesEachLossWithItsHyperparameters) {
  auto t = parse_loss_config(YAML::Load("name: triplet\nmargin: 0.3\nmining: semi-hard\ndistance: euclidean\n"), "t");
  ASSERT_TRUE(std::holds_alternative<TripletLossOptions>(t.options()));
  EXPECT_EQ(std::get<TripletLossOptions>(t.options()).margin(), 0.3);
  EXPECT_EQ(std::get<TripletLossOptions>(t.options()).mining(), Mining::kSemiHard);
  auto i = parse_loss_config(YAML::Load("name: infonce\ntemperature: 0.05\ndirection: image_to_text\n"), "t");
  EXPECT_EQ(*std::get<InfoNCELossOptions>(i.options()).temperature(), 0.05);
  auto c = parse_loss_config(YAML::Load("name: clip\nlocal_loss: true\ngather_with_grad: true\n"), "t");
  EXPECT_TRUE(c.distributed().local_loss());
  EXPECT_TRUE(c.distributed().gather_with_grad());
}

TEST(LossConfig, UnknownNameListsValidNames) {
  auto msg = error_of([] { parse_loss_config(YAML::Load("name: hinge\n"), "train.yaml"); });
  EXPECT_NE(msg.find("loss.name"), std::string::npos) << msg;
  EXPECT_NE(msg.find("clip, infonce, contrastive, triplet, siglip"), std::string::npos) << msg;
}

TEST(LossConfig, HyperparameterOfAnotherLossIsRejected) {
  auto msg = error_of([] { parse_loss_config(YAML::Load("name: clip\nmargin: 0.2\n"), "train.yaml"); });
  EXPECT_NE(msg.find("unknown key 'loss.margin'"), std::string::npos) << msg;
  msg = error_of([] { parse_loss_config(YAML::Load("name: infonce\ntemperature: -1\n"), "train.yaml"); });
  EXPECT_NE(msg.find("must be in (0, 1000000]"), std::string::npos) << msg;
  msg = error_of([] { parse_loss_config(YAML::Load("name: triplet\nmining: easy\n"), "train.yaml"); });
  EXPECT_NE(msg.find("hardest, semi-hard, all"), std::string::npos) << msg;
}

}  // namespace
}  // namespace torchclip
