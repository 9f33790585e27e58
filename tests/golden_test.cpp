// Parity of the architecture with open_clip: parameter counts, every state-dict name and shape,
// and the FLOP count, against tests/golden/architecture.json written by make_golden.py.
#include "eval/zeroshot.h"
#include "model/clip.h"
#include "train/step.h"

#include <gtest/gtest.h>
#include <torch/optim/adamw.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>

#include "support.h"

namespace torchclip {
namespace {

YAML::Node golden() {
  static YAML::Node g = YAML::LoadFile(TORCHCLIP_SOURCE_DIR "/tests/golden/architecture.json")["models"];
  return g;
}

class Architecture : public ::testing::TestWithParam<std::string> {};

TEST_P(Architecture, MatchesOpenClip) {
  const std::string name = GetParam();
  YAML::Node expected = golden()[name];
  ASSERT_TRUE(expected) << name << " missing from architecture.json: run tests/golden/make_golden.py";
  CLIP model(load_model_config(name));
  EXPECT_EQ(parameter_count(*model), expected["parameters"].as<int64_t>());
  EXPECT_EQ(parameter_count(*model->named_children()["visual"]), expected["visual_parameters"].as<int64_t>());
  EXPECT_EQ(parameter_count(*model->text), expected["text_parameters"].as<int64_t>());

  auto ours = state_dict(*model);
  YAML::Node theirs = expected["state_dict"];
  EXPECT_EQ(ours.size(), theirs.size());
  for (const auto& kv : theirs) {
    auto key = kv.first.as<std::string>();
    auto it = ours.find(key);
    if (it == ours.end()) {
      ADD_FAILURE() << "missing " << key;
      continue;
    }
    auto shape = kv.second.as<std::vector<int64_t>>();
    EXPECT_EQ(it->second.sizes().vec(), shape) << key;
  }
  for (const auto& [key, value] : ours) EXPECT_TRUE(theirs[key]) << "unexpected " << key;

  EXPECT_EQ(model->text_flops(), expected["text_flops"].as<int64_t>());
  const VisionCfg& v = model->config.vision_cfg();
  int64_t image_flops = expected["image_flops"].as<int64_t>();
  if (v.is_resnet()) {
    // open_clip's attention pool projects and attends for all T = (S/32)^2 + 1 tokens and keeps
    // token 0; ours computes token 0 only. Remove the other T-1 rows from the reference count:
    // q_proj and c_proj (2*C*C + 2*C*E each row) and their score and mixing products (4*T*C).
    const int64_t C = v.width() * 32, E = model->config.embed_dim(), s = v.image_size() / 32, T = s * s + 1;
    image_flops -= (T - 1) * (2 * C * C + 2 * C * E + 4 * T * C);
  }
  EXPECT_EQ(model->image_flops(), image_flops);
}

// The AdamW groups: exactly the names open_clip's training exempts from weight decay (its own
// `exclude` rule, recorded by make_golden.py), so token_embedding.weight and the positional
// embeddings are decayed and class_embedding, biases, norms and logit_scale are not.
TEST_P(Architecture, WeightDecayGroupsMatchOpenClip) {
  const std::string name = GetParam();
  YAML::Node expected = golden()[name]["no_weight_decay"];
  ASSERT_TRUE(expected) << name << ": architecture.json has no no_weight_decay list: run tests/golden/make_golden.py";
  CLIP model(load_model_config(name));
  ParamGroupNames groups = param_group_names(model);
  std::vector<std::string> theirs = expected.as<std::vector<std::string>>();
  std::sort(groups.no_decay.begin(), groups.no_decay.end());
  EXPECT_EQ(groups.no_decay, theirs);
  EXPECT_EQ(groups.decay.size() + groups.no_decay.size(), model->parameters().size());
  for (const auto& n : groups.decay) EXPECT_TRUE(std::find(theirs.begin(), theirs.end(), n) == theirs.end()) << n;
  for (const char* decayed : {"token_embedding.weight", "positional_embedding"})
    EXPECT_NE(std::find(groups.decay.begin(), groups.decay.end(), decayed), groups.decay.end()) << decayed;
  // param_groups() hands exactly these tensors to AdamW, with weight decay only on the first.
  auto pg = param_groups(model, OptimCfg().weight_decay(0.2));
  ASSERT_EQ(pg.size(), 2u);
  EXPECT_EQ(pg[0].params().size(), groups.decay.size());
  EXPECT_EQ(pg[1].params().size(), groups.no_decay.size());
  EXPECT_DOUBLE_EQ(static_cast<torch::optim::AdamWOptions&>(pg[0].options()).weight_decay(), 0.2);
  EXPECT_DOUBLE_EQ(static_cast<torch::optim::AdamWOptions&>(pg[1].options()).weight_decay(), 0.0);
}

std::vector<std::string> names() {
  std::vector<std::string> out;
  for (const auto& kv : golden()) out.push_back(kv.first.as<std::string>());
  return out;
}

INSTANTIATE_TEST_SUITE_P(Configs, Architecture, ::testing::ValuesIn(names()),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

TEST(Architecture, EveryShippedConfigHasAGoldenEntry) {
  for (const auto& n : model_config_names()) EXPECT_TRUE(golden()[n]) << n;
}

}  // namespace
}  // namespace torchclip

namespace torchclip {
namespace {

TEST(ZeroShotTemplates, AreOpenClipsOpenAiImageNetTemplates) {
  auto r = test::run_shell("python3 -c \"from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES as T; "
                           "print(chr(10).join(t('{}') for t in T))\"");
  ASSERT_EQ(r.code, 0) << r.out;
  std::string ours;
  for (const auto& t : openai_imagenet_templates()) ours += t + "\n";
  EXPECT_EQ(openai_imagenet_templates().size(), 80u);
  EXPECT_EQ(ours, r.out);
}

}  // namespace
}  // namespace torchclip
