#include "model/text_transformer.h"

#include <torch/nn/init.h>

#include <cmath>

namespace torchclip {

at::Tensor sinusoidal_position_encoding(int64_t length, int64_t width) {
  auto pos = at::arange(length, at::kDouble).unsqueeze(1);                           // [L, 1]
  auto freq = at::exp(at::arange(0, width, 2, at::kDouble) * (-std::log(10000.0) / width));  // [W/2]
  auto angle = pos * freq.unsqueeze(0);                                              // [L, W/2]
  return at::stack({angle.sin(), angle.cos()}, -1).reshape({length, width}).to(at::kFloat);  // [L, W]
}

void TextTransformerImpl::reset() {
  const TextCfg& c = options.cfg();
  const int64_t W = c.width(), L = c.layers();
  token_embedding = register_module("token_embedding", torch::nn::Embedding(c.vocab_size(), W));
  if (c.pos_embed_type() == PosEmbed::kLearnable) {
    positional_embedding = register_parameter("positional_embedding", at::empty({c.context_length(), W}));
  } else {
    sinusoid_ = sinusoidal_position_encoding(c.context_length(), W);
  }
  transformer = register_module("transformer", Transformer(TransformerOptions(W, L, c.heads())
                                                               .mlp_ratio(c.mlp_ratio())
                                                               .ls_init_value(c.ls_init_value())
                                                               .quick_gelu(options.quick_gelu())));
  ln_final = register_module("ln_final", layer_norm(W));
  if (c.proj_type() == TextProj::kLinear) {
    if (c.proj_bias()) {
      text_projection_linear = register_module("text_projection", torch::nn::Linear(W, options.output_dim()));
    } else {
      text_projection = register_parameter("text_projection", at::empty({W, options.output_dim()}));
    }
  }

  // OpenCLIP's TextTransformer.init_parameters (GPT-2 style depth-scaled residual projections).
  torch::NoGradGuard no_grad;
  const double w = static_cast<double>(W);
  const double proj_std = std::pow(w, -0.5) * std::pow(2.0 * L, -0.5);
  const double attn_std = std::pow(w, -0.5), fc_std = std::pow(2.0 * w, -0.5);
  torch::nn::init::normal_(token_embedding->weight, 0.0, 0.02);
  if (positional_embedding.defined()) torch::nn::init::normal_(positional_embedding, 0.0, 0.01);
  for (const auto& m : *transformer->resblocks) {
    auto* block = m->as<ResidualAttentionBlockImpl>();
    torch::nn::init::normal_(block->attn->in_proj_weight, 0.0, attn_std);
    torch::nn::init::normal_(block->attn->out_proj->weight, 0.0, proj_std);
    torch::nn::init::normal_(block->mlp->c_fc->weight, 0.0, fc_std);
    torch::nn::init::normal_(block->mlp->c_proj->weight, 0.0, proj_std);
  }
  if (text_projection.defined()) torch::nn::init::normal_(text_projection, 0.0, attn_std);
  if (text_projection_linear) {
    torch::nn::init::normal_(text_projection_linear->weight, 0.0, attn_std);
    text_projection_linear->bias.zero_();
  }
}

at::Tensor TextTransformerImpl::tokens(const at::Tensor& ids) {
  const TextCfg& c = options.cfg();
  TORCH_CHECK(ids.dim() == 2, "encode_text: expected token ids [batch, length], got shape ", ids.sizes());
  const int64_t T = ids.size(1);
  TORCH_CHECK(T <= c.context_length(), "encode_text: ", T, " tokens exceed context_length ", c.context_length());
  auto x = token_embedding(ids);  // [B, T, W]
  if (positional_embedding.defined()) {
    x = x + positional_embedding.slice(0, 0, T).to(x.scalar_type());
  } else {
    if (sinusoid_.device() != x.device()) sinusoid_ = sinusoid_.to(x.device());
    x = x + sinusoid_.slice(0, 0, T).to(x.scalar_type());
  }
  // Causal self-attention: an additive -inf mask above the diagonal, expressed as is_causal so
  // the fused kernels can skip the masked half instead of adding a [T, T] tensor.
  x = transformer(x, std::nullopt, /*is_causal=*/!c.no_causal_mask());  // [B, T, W]
  return ln_final(x);
}

at::Tensor TextTransformerImpl::pool_index(const at::Tensor& ids) const {
  const TextCfg& c = options.cfg();
  if (c.pool_type() == TextPool::kArgmax) return ids.argmax(-1);                         // CLIP's EOT is the largest id
  if (c.pool_type() == TextPool::kEos) return ids.eq(c.eos_id()).to(at::kInt).argmax(-1);  // first eos
  if (c.pool_type() == TextPool::kFirst) return at::zeros({ids.size(0)}, ids.options().dtype(at::kLong));
  return at::full({ids.size(0)}, ids.size(1) - 1, ids.options().dtype(at::kLong));  // "last"
}

at::Tensor TextTransformerImpl::forward(const at::Tensor& ids_in) {
  const TextCfg& c = options.cfg();
  auto idx = pool_index(ids_in);                                          // [B]
  at::Tensor ids = ids_in;
  // With a causal mask the pooled position never sees later ones, so positions past the last
  // pooled one (the padding after the longest caption) are not computed at all. The result is the
  // same function; typical captions fill a fraction of the 77-token context. (CPU only: on CUDA
  // the length would cost a device sync every step.)
  if (padding_can_be_cut(c) && ids_in.device().is_cpu() && ids_in.size(0) > 0) {
    const int64_t needed = idx.max().item<int64_t>() + 1;
    if (needed < ids_in.size(1)) ids = ids_in.slice(1, 0, needed);        // [B, T']
  }
  auto x = tokens(ids);                                                   // [B, T', W]
  auto pooled = x.gather(1, idx.view({-1, 1, 1}).expand({x.size(0), 1, x.size(2)})).squeeze(1);  // [B, W]
  if (text_projection.defined()) return at::matmul(pooled, text_projection);  // [B, E]
  if (text_projection_linear) return text_projection_linear(pooled);
  return pooled;
}

int64_t TextTransformerImpl::flops(int64_t tokens) const {
  const TextCfg& c = options.cfg();
  const int64_t proj = c.proj_type() == TextProj::kLinear ? 2 * c.width() * options.output_dim() : 0;
  return transformer->flops(tokens > 0 ? tokens : c.context_length()) + proj;
}

}  // namespace torchclip
