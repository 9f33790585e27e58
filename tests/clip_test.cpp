#include "model/clip.h"

#include <gtest/gtest.h>
#include <torch/serialize.h>
#include <yaml-cpp/yaml.h>

#include <cmath>

#include "support.h"

namespace torchclip {
namespace {

ModelConfig tiny() { return load_model_config("tiny"); }

ModelConfig with(const std::string& yaml_patch) {
  // The tiny config with some fields replaced, through the one parser.
  auto node = YAML::LoadFile(configs_dir() + "/models/tiny.yaml");
  auto patch = YAML::Load(yaml_patch);
  for (const auto& kv : patch) {
    if (kv.second.IsMap()) {
      for (const auto& inner : kv.second) node[kv.first.as<std::string>()][inner.first.as<std::string>()] = inner.second;
    } else {
      node[kv.first.as<std::string>()] = kv.second;
    }
  }
  return parse_model_config(node, "tiny+patch");
}

TEST(TextTower, CausalMaskHidesLaterTokens) {
  at::manual_seed(0);
  CLIP model(tiny());
  model->eval();
  auto ids = test::ids_with_eot({20, 20}, 32, 49408);
  auto changed = ids.clone();
  const int64_t k = 9;
  changed.select(1, k).fill_(123);
  torch::NoGradGuard g;
  auto a = model->text->tokens(ids), b = model->text->tokens(changed);  // [B, T, W]
  EXPECT_TRUE(test::all_close(a.slice(1, 0, k), b.slice(1, 0, k), 0, 0)) << "positions before the change moved";
  EXPECT_GT((a.slice(1, k) - b.slice(1, k)).abs().amax().item<double>(), 1e-4) << "the change had no effect at all";
}

TEST(TextTower, WithoutCausalMaskEarlierTokensSeeLaterOnes) {
  at::manual_seed(0);
  CLIP model(with("text_cfg: {no_causal_mask: true}"));
  auto ids = test::ids_with_eot({20}, 32, 49408);
  auto changed = ids.clone();
  changed[0][9] = 123;
  torch::NoGradGuard g;
  EXPECT_GT((model->text->tokens(ids) - model->text->tokens(changed)).slice(1, 0, 9).abs().amax().item<double>(), 1e-4);
}

TEST(TextTower, ArgmaxPoolingTakesTheEotPosition) {
  at::manual_seed(0);
  CLIP model(tiny());
  auto ids = test::ids_with_eot({3, 17, 31}, 32, 49408);
  torch::NoGradGuard g;
  auto idx = model->text->pool_index(ids);
  EXPECT_EQ(idx[0].item<int64_t>(), 3);
  EXPECT_EQ(idx[1].item<int64_t>(), 17);
  EXPECT_EQ(idx[2].item<int64_t>(), 31);
  auto tokens = model->text->tokens(ids);  // [3, 32, W]
  auto f = model->encode_text(ids);
  for (int64_t b = 0; b < 3; ++b) {
    auto expected = at::matmul(tokens[b][idx[b].item<int64_t>()], model->text->text_projection);
    EXPECT_TRUE(test::all_close(f[b], expected, 1e-6, 1e-5)) << b;
  }
  // Tokens after EOT (padding) do not change the pooled feature.
  auto padded = ids.clone();
  padded[0].slice(0, 4).fill_(7);
  EXPECT_TRUE(test::all_close(model->encode_text(padded)[0], f[0], 1e-6, 1e-5));
}

TEST(TextTower, OtherPoolTypes) {
  auto ids = at::tensor({5, 2, 9, 2, 1}, at::kLong).view({1, 5});
  EXPECT_EQ(CLIP(with("text_cfg: {pool_type: eos, eos_id: 2}"))->text->pool_index(ids).item<int64_t>(), 1);
  EXPECT_EQ(CLIP(with("text_cfg: {pool_type: first}"))->text->pool_index(ids).item<int64_t>(), 0);
  EXPECT_EQ(CLIP(with("text_cfg: {pool_type: last}"))->text->pool_index(ids).item<int64_t>(), 4);
}

TEST(TextTower, SinusoidalPositionsAreFixedAndNotSaved) {
  auto pe = sinusoidal_position_encoding(10, 6);
  EXPECT_NEAR(pe[3][0].item<double>(), std::sin(3.0), 1e-6);
  EXPECT_NEAR(pe[3][1].item<double>(), std::cos(3.0), 1e-6);
  EXPECT_NEAR(pe[7][4].item<double>(), std::sin(7.0 / std::pow(10000.0, 4.0 / 6)), 1e-6);
  EXPECT_NEAR(pe[7][5].item<double>(), std::cos(7.0 / std::pow(10000.0, 4.0 / 6)), 1e-6);
  CLIP model(with("text_cfg: {pos_embed_type: sinusoidal}"));
  EXPECT_EQ(state_dict(*model).count("positional_embedding"), 0u);
  auto f = model->encode_text(test::ids_with_eot({5}, 32, 49408));
  EXPECT_TRUE(at::isfinite(f).all().item<bool>());
}

TEST(Clip, FeaturesAreNormalisedAndLogitsScaled) {
  at::manual_seed(0);
  CLIP model(tiny());
  auto images = at::randn({4, 3, 28, 28});
  auto ids = test::ids_with_eot({3, 5, 7, 9}, 32, 49408);
  auto out = model->forward(images, ids);
  EXPECT_TRUE(test::all_close(out.image_features.norm(2, -1), at::ones({4}), 1e-6));
  EXPECT_TRUE(test::all_close(out.text_features.norm(2, -1), at::ones({4}), 1e-6));
  EXPECT_NEAR(out.logit_scale.item<double>(), 1 / 0.07, 1e-4);
  auto logits = model->logits(out.image_features, out.text_features);
  EXPECT_TRUE(test::all_close(logits, (1 / 0.07) * at::matmul(out.image_features, out.text_features.t()), 1e-4, 1e-5));
  EXPECT_FALSE(out.logit_bias.has_value());
  CLIP siglip(with("init_logit_scale: 2.302585\ninit_logit_bias: -10"));
  EXPECT_EQ(siglip->logit_bias.item<double>(), -10);
}

// Gradient checkpointing recomputes each block in backward: the same loss and gradients as the
// plain model (fp32, to 1e-6), and the towers' outputs really come from the checkpointed blocks.
TEST(Clip, GradientCheckpointingGivesThePlainGradients) {
  auto images = at::randn({4, 3, 28, 28}, at::TensorOptions().dtype(at::kFloat));
  auto ids = test::ids_with_eot({3, 5, 7, 9}, 32, 49408);
  std::map<std::string, at::Tensor> grads[2];
  double losses[2] = {0, 0};
  for (int ckpt = 0; ckpt < 2; ++ckpt) {
    at::manual_seed(0);
    CLIP model(tiny());
    model->train();
    model->set_grad_checkpointing(ckpt == 1);
    auto out = model->forward(images, ids);
    auto logits = model->logits(out.image_features, out.text_features);  // [4, 4]
    auto labels = at::arange(4, at::kLong);
    auto loss = (at::cross_entropy_loss(logits, labels) + at::cross_entropy_loss(logits.t(), labels)) / 2;
    if (ckpt) {
      const std::string fn = model->vit->transformer->forward(model->vit->conv1(images).flatten(2).transpose(1, 2))
                                 .grad_fn()
                                 ->name();
      EXPECT_NE(fn.find("BlockCheckpoint"), std::string::npos) << fn;
    }
    loss.backward();
    losses[ckpt] = loss.item<double>();
    for (const auto& p : model->named_parameters()) grads[ckpt][p.key()] = p.value().grad().clone();
  }
  EXPECT_DOUBLE_EQ(losses[0], losses[1]);
  ASSERT_EQ(grads[0].size(), grads[1].size());
  for (const auto& [name, g] : grads[0]) {
    ASSERT_TRUE(grads[1].count(name)) << name;
    EXPECT_TRUE(test::all_close(grads[1][name], g, 1e-6, 1e-5)) << name;
  }
  // Outside training, or without gradients, the blocks run plainly.
  at::manual_seed(0);
  CLIP model(tiny());
  model->set_grad_checkpointing(true);
  model->eval();
  EXPECT_EQ(model->vit->transformer->forward(at::randn({1, 17, 96}, at::TensorOptions().requires_grad(true))).grad_fn()->name().find(
                "BlockCheckpoint"),
            std::string::npos);
}

TEST(Clip, LogitScaleIsClampedToZeroAndLn100) {
  CLIP model(tiny());
  EXPECT_NEAR(model->logit_scale.item<double>(), std::log(1 / 0.07), 1e-6);
  EXPECT_EQ(model->logit_scale.dim(), 0);
  torch::NoGradGuard g;
  model->logit_scale.fill_(7.5);
  model->clamp_logit_scale();
  EXPECT_NEAR(model->logit_scale.item<double>(), std::log(100.0), 1e-6);
  model->logit_scale.fill_(-0.3);
  model->clamp_logit_scale();
  EXPECT_EQ(model->logit_scale.item<double>(), 0.0);
  model->logit_scale.fill_(3.0);
  model->clamp_logit_scale();
  EXPECT_NEAR(model->logit_scale.item<double>(), 3.0, 1e-7);
}

TEST(Clip, InitialisationFollowsOpenClip) {
  at::manual_seed(0);
  CLIP model(load_model_config("ViT-S-32-alt"));  // text width 256, 10 layers; vision width 384
  auto sd = state_dict(*model);
  auto std_of = [&](const std::string& k) { return sd.at(k).std().item<double>(); };
  const double W = 256, L = 10;
  EXPECT_NEAR(std_of("token_embedding.weight"), 0.02, 0.02 * 0.02);
  EXPECT_NEAR(std_of("positional_embedding"), 0.01, 0.01 * 0.05);
  EXPECT_NEAR(std_of("transformer.resblocks.3.attn.in_proj_weight"), std::pow(W, -0.5), 0.03 * std::pow(W, -0.5));
  const double proj_std = std::pow(W, -0.5) * std::pow(2 * L, -0.5);
  EXPECT_NEAR(std_of("transformer.resblocks.3.attn.out_proj.weight"), proj_std, 0.03 * proj_std);
  EXPECT_NEAR(std_of("transformer.resblocks.3.mlp.c_proj.weight"), proj_std, 0.03 * proj_std);
  EXPECT_NEAR(std_of("transformer.resblocks.3.mlp.c_fc.weight"), std::pow(2 * W, -0.5), 0.03 * std::pow(2 * W, -0.5));
  EXPECT_NEAR(std_of("text_projection"), std::pow(W, -0.5), 0.03 * std::pow(W, -0.5));
  EXPECT_NEAR(std_of("visual.positional_embedding"), std::pow(384.0, -0.5), 0.05 * std::pow(384.0, -0.5));
  EXPECT_NEAR(std_of("visual.proj"), std::pow(384.0, -0.5), 0.03 * std::pow(384.0, -0.5));
  EXPECT_EQ(sd.at("transformer.resblocks.0.attn.in_proj_bias").abs().max().item<double>(), 0.0);
  EXPECT_EQ(sd.at("transformer.resblocks.0.attn.out_proj.bias").abs().max().item<double>(), 0.0);
  // Vision blocks keep PyTorch's nn.MultiheadAttention init: xavier-uniform in_proj, bound sqrt(6/(W+3W)).
  const double bound = std::sqrt(6.0 / (384 + 3 * 384));
  EXPECT_LE(sd.at("visual.transformer.resblocks.0.attn.in_proj_weight").abs().max().item<double>(), bound);
  EXPECT_NEAR(std_of("visual.transformer.resblocks.0.attn.in_proj_weight"), bound / std::sqrt(3.0), 0.03 * bound);
}

TEST(ModifiedResNet, ForwardShapesNamesAndInit) {
  at::manual_seed(0);
  CLIP model(with("embed_dim: 32\nvision_cfg: {layers: [1, 2, 1, 1], width: 16, image_size: 64, head_width: 64}"));
  auto sd = state_dict(*model);
  for (const char* k : {"visual.conv1.weight", "visual.bn3.running_var", "visual.layer1.0.downsample.0.weight",
                        "visual.layer2.1.bn3.num_batches_tracked", "visual.layer2.0.downsample.1.running_mean",
                        "visual.attnpool.positional_embedding", "visual.attnpool.q_proj.weight", "visual.attnpool.c_proj.bias"}) {
    EXPECT_EQ(sd.count(k), 1u) << k;
  }
  EXPECT_EQ(sd.count("visual.layer2.1.downsample.0.weight"), 0u);  // only the first block of a stage downsamples
  EXPECT_EQ(sd.at("visual.attnpool.positional_embedding").sizes(), (at::IntArrayRef{2 * 2 + 1, 512}));
  EXPECT_EQ(sd.at("visual.layer3.0.bn3.weight").abs().max().item<double>(), 0.0);  // zero-init residual
  auto f = model->encode_image(at::randn({2, 3, 64, 64}), true);
  EXPECT_EQ(f.sizes(), (at::IntArrayRef{2, 32}));
}

TEST(ModifiedResNet, AttentionPoolEqualsFullAttentionRowZero) {
  // OpenCLIP runs multi-head attention for every token and keeps token 0; we compute only that
  // query. Compare with the full computation written out.
  at::manual_seed(4);
  AttentionPool2d pool(2, 8, 2, 6);
  auto x = at::randn({3, 8, 2, 2});
  torch::NoGradGuard g;
  auto t = x.flatten(2).transpose(1, 2);
  t = at::cat({t.mean(1, true), t}, 1) + pool->positional_embedding;  // [3, 5, 8]
  auto q = pool->q_proj(t).view({3, 5, 2, 4}).transpose(1, 2);
  auto k = pool->k_proj(t).view({3, 5, 2, 4}).transpose(1, 2);
  auto v = pool->v_proj(t).view({3, 5, 2, 4}).transpose(1, 2);
  auto a = at::softmax(at::matmul(q, k.transpose(-1, -2)) / 2.0, -1);  // 1/sqrt(4)
  auto full = pool->c_proj(at::matmul(a, v).transpose(1, 2).reshape({3, 5, 8}));
  EXPECT_TRUE(test::all_close(pool(x), full.select(1, 0), 1e-6, 1e-5));
}

TEST(VisionTransformer, PoolingVariantsAndOptionalModules) {
  at::manual_seed(0);
  auto images = at::randn({2, 3, 28, 28});
  for (const char* patch : {"vision_cfg: {pool_type: avg}", "vision_cfg: {final_ln_after_pool: true}",
                            "vision_cfg: {no_ln_pre: true, ls_init_value: 0.1}"}) {
    CLIP model(with(patch));
    EXPECT_EQ(model->encode_image(images).sizes(), (at::IntArrayRef{2, 64})) << patch;
  }
  auto sd = state_dict(*CLIP(with("vision_cfg: {no_ln_pre: true, ls_init_value: 0.1}")));
  EXPECT_EQ(sd.count("visual.ln_pre.weight"), 0u);
  EXPECT_EQ(sd.count("visual.transformer.resblocks.2.ls_2.gamma"), 1u);
  // avg pooling is the mean of the patch tokens after ln_post, and tok the class token, with the
  // same weights: both computed here from the tower's own pieces.
  torch::NoGradGuard no_grad;
  CLIP avg(with("vision_cfg: {pool_type: avg}")), tok(tiny());
  auto theirs = avg->vit->named_parameters();
  for (auto& p : tok->vit->named_parameters()) p.value().copy_(theirs[p.key()]);
  auto v = avg->vit;
  auto x = v->conv1(images).flatten(2).transpose(1, 2);  // [B, G*G, W]
  const int64_t W = x.size(2);
  x = at::cat({v->class_embedding.view({1, 1, W}).expand({2, 1, W}), x}, 1) + v->positional_embedding;  // [B, 1+G*G, W]
  x = v->ln_post(v->transformer(v->ln_pre(x)));                                                          // [B, T, W]
  EXPECT_TRUE(test::all_close(v->forward(images), at::matmul(x.slice(1, 1).mean(1), v->proj), 1e-5, 1e-5));
  EXPECT_TRUE(test::all_close(tok->vit->forward(images), at::matmul(x.select(1, 0), v->proj), 1e-5, 1e-5));
  EXPECT_FALSE(test::all_close(v->forward(images), tok->vit->forward(images), 1e-3));  // the two poolings differ
}

TEST(VisionTransformer, PatchDropoutKeepsClassTokenAndRealPatches) {
  at::manual_seed(0);
  auto x = at::arange(2 * 9 * 1, at::kFloat).view({2, 9, 1});  // distinct values identify tokens
  auto y = patch_dropout(x, 0.5);                                // keeps floor(8 * 0.5) = 4 patches
  ASSERT_EQ(y.sizes(), (at::IntArrayRef{2, 5, 1}));
  for (int64_t b = 0; b < 2; ++b) {
    EXPECT_EQ(y[b][0][0].item<float>(), x[b][0][0].item<float>());
    auto kept = std::get<0>(y[b].slice(0, 1).view(-1).sort());
    EXPECT_EQ(std::get<0>(at::unique_consecutive(kept)).numel(), 4);
    EXPECT_TRUE(at::isin(kept, x[b].slice(0, 1).view(-1)).all().item<bool>());
  }
  CLIP model(with("vision_cfg: {patch_dropout: 0.5}"));
  model->eval();  // no dropout in eval: deterministic
  auto images = at::randn({2, 3, 28, 28});
  EXPECT_TRUE(test::all_close(model->encode_image(images), model->encode_image(images), 0, 0));
}

TEST(Clip, CustomTextPutsTextWeightsUnderText) {
  auto sd = state_dict(*CLIP(with("custom_text: true")));
  EXPECT_EQ(sd.count("text.token_embedding.weight"), 1u);
  EXPECT_EQ(sd.count("text.transformer.resblocks.0.attn.in_proj_weight"), 1u);
  EXPECT_EQ(sd.count("text.text_projection"), 1u);
  EXPECT_EQ(sd.count("token_embedding.weight"), 0u);
  auto lin = state_dict(*CLIP(with("text_cfg: {proj_bias: true}")));
  EXPECT_EQ(lin.at("text_projection.weight").sizes(), (at::IntArrayRef{64, 64}));
  EXPECT_EQ(lin.count("text_projection.bias"), 1u);
}

TEST(Clip, SaveLoadRoundTripGivesIdenticalOutputs) {
  at::manual_seed(0);
  for (const char* patch : {"embed_dim: 64", "vision_cfg: {layers: [1, 1, 1, 1], width: 16, image_size: 64}"}) {
    CLIP a(with(patch));
    // Move BN running statistics away from their defaults so buffers are checked too.
    const int64_t S = a->config.vision_cfg().image_size();
    a->encode_image(at::randn({2, 3, S, S}));
    a->eval();
    auto path = (test::temp_dir("roundtrip") / "model.pt").string();
    torch::save(a, path);
    at::manual_seed(123);
    CLIP b(with(patch));
    torch::load(b, path);
    b->eval();
    auto images = at::randn({2, 3, S, S});
    auto ids = test::ids_with_eot({4, 9}, 32, 49408);
    torch::NoGradGuard g;
    EXPECT_TRUE(test::all_close(a->encode_image(images), b->encode_image(images), 0, 0)) << patch;
    EXPECT_TRUE(test::all_close(a->encode_text(ids), b->encode_text(ids), 0, 0)) << patch;
    auto sa = state_dict(*a), sb = state_dict(*b);
    ASSERT_EQ(sa.size(), sb.size());
    for (const auto& [k, v] : sa) EXPECT_TRUE(v.equal(sb.at(k))) << k;
  }
}

}  // namespace
}  // namespace torchclip
