#include "model/transformer.h"

#include <gtest/gtest.h>

#include <cmath>

#include "support.h"

namespace torchclip {
namespace {

/// softmax(Q K^T / sqrt(d) + mask) V written out per head, independent of SDPA.
at::Tensor naive_attention(SelfAttentionImpl& a, const at::Tensor& x, const at::Tensor& mask) {
  const int64_t W = a.width, H = a.heads, D = W / H;
  auto w = a.in_proj_weight, b = a.in_proj_bias;
  auto q = at::matmul(x, w.slice(0, 0, W).t()) + b.slice(0, 0, W);
  auto k = at::matmul(x, w.slice(0, W, 2 * W).t()) + b.slice(0, W, 2 * W);
  auto v = at::matmul(x, w.slice(0, 2 * W).t()) + b.slice(0, 2 * W);
  std::vector<at::Tensor> heads;
  for (int64_t h = 0; h < H; ++h) {
    auto qh = q.slice(2, h * D, (h + 1) * D), kh = k.slice(2, h * D, (h + 1) * D), vh = v.slice(2, h * D, (h + 1) * D);
    auto scores = at::matmul(qh, kh.transpose(1, 2)) / std::sqrt(static_cast<double>(D)) + mask;  // [B, T, T]
    heads.push_back(at::matmul(at::softmax(scores, -1), vh));
  }
  auto y = at::cat(heads, -1);  // [B, T, W]
  return at::matmul(y, a.out_proj->weight.t()) + a.out_proj->bias;
}

at::Tensor causal_mask(int64_t T, at::ScalarType dtype = at::kFloat) {
  // The additive mask OpenCLIP builds: -inf above the diagonal, 0 elsewhere.
  return at::full({T, T}, -std::numeric_limits<double>::infinity(), dtype).triu(1);
}

TEST(SelfAttention, MatchesNaiveMultiHeadAttention) {
  at::manual_seed(0);
  SelfAttention attn(12, 3);
  torch::NoGradGuard g;
  attn->in_proj_bias.normal_();  // nonzero biases so they are checked too
  attn->out_proj->bias.normal_();
  auto x = at::randn({2, 5, 12});
  EXPECT_TRUE(test::all_close(attn(x), naive_attention(*attn, x, at::zeros({5, 5})), 1e-5, 1e-5));
}

TEST(SelfAttention, IsCausalEqualsOpenClipsAdditiveMask) {
  at::manual_seed(1);
  SelfAttention attn(16, 4);
  auto x = at::randn({3, 7, 16});
  torch::NoGradGuard g;
  auto causal = attn(x, std::nullopt, /*is_causal=*/true);
  EXPECT_TRUE(test::all_close(causal, attn(x, causal_mask(7)), 1e-6, 1e-5));
  EXPECT_TRUE(test::all_close(causal, naive_attention(*attn, x, causal_mask(7)), 1e-5, 1e-5));
}

TEST(SelfAttention, GradcheckInDouble) {
  at::manual_seed(2);
  SelfAttention attn(4, 2);
  attn->to(at::kDouble);
  auto x = at::randn({1, 3, 4}, at::kDouble);
  auto target = at::randn({1, 3, 4}, at::kDouble);
  for (bool causal : {false, true}) {
    // Inputs: x and in_proj_weight, so both the data and the weight gradients are checked.
    auto fn = [&](const std::vector<at::Tensor>& in) {
      auto qkv = at::linear(in[0], in[1], attn->in_proj_bias).view({1, 3, 3, 2, 2}).permute({2, 0, 3, 1, 4});
      auto y = at::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], std::nullopt, 0.0, causal);
      return (attn->out_proj(y.transpose(1, 2).reshape({1, 3, 4})) * target).sum();
    };
    EXPECT_TRUE(test::gradcheck(fn, {x, attn->in_proj_weight.detach()})) << "causal=" << causal;
    // The module itself must produce the same function as the one checked above.
    torch::NoGradGuard g;
    EXPECT_TRUE(test::all_close(fn({x, attn->in_proj_weight}), (attn(x, std::nullopt, causal) * target).sum(), 1e-12));
  }
}

TEST(Transformer, StateDictNamesAreOpenClips) {
  Transformer t(TransformerOptions(8, 2, 2).ls_init_value(0.1));
  std::vector<std::string> names;
  for (const auto& p : t->named_parameters()) names.push_back(p.key());
  std::vector<std::string> expected;
  for (int i = 0; i < 2; ++i) {
    for (const char* n : {"ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
                          "attn.out_proj.bias", "ls_1.gamma", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight",
                          "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias", "ls_2.gamma"}) {
      expected.push_back("resblocks." + std::to_string(i) + "." + n);
    }
  }
  std::sort(names.begin(), names.end());
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(names, expected);
  auto block = t->resblocks[0]->as<ResidualAttentionBlockImpl>();
  EXPECT_TRUE(test::all_close(block->ls_1->gamma, at::full({8}, 0.1)));
}

TEST(Transformer, PreLnResidualBlockComputesTheFormula) {
  at::manual_seed(3);
  ResidualAttentionBlock block(TransformerOptions(8, 1, 2));
  auto x = at::randn({2, 4, 8});
  torch::NoGradGuard g;
  auto h = x + block->attn(at::layer_norm(x, {8}, block->ln_1->weight, block->ln_1->bias, 1e-5));
  auto m = at::layer_norm(h, {8}, block->ln_2->weight, block->ln_2->bias, 1e-5);
  auto mlp = at::linear(at::gelu(at::linear(m, block->mlp->c_fc->weight, block->mlp->c_fc->bias)),
                        block->mlp->c_proj->weight, block->mlp->c_proj->bias);
  EXPECT_TRUE(test::all_close(block(x), h + mlp, 1e-6, 1e-5));
}

TEST(Activation, QuickGeluAndExactGelu) {
  auto x = at::linspace(-3, 3, 13, at::kDouble);
  EXPECT_TRUE(test::all_close(activation(x, true), x / (1 + at::exp(-1.702 * x)), 1e-12));
  // GELU(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)): the exact form, not the tanh approximation.
  EXPECT_TRUE(test::all_close(activation(x, false), 0.5 * x * (1 + at::erf(x / std::sqrt(2.0))), 1e-12));
}

}  // namespace
}  // namespace torchclip
