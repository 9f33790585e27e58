// Text tower (Radford et al. 2021): token_embedding + positional_embedding -> causal Transformer ->
// ln_final -> the feature at the pooled position (the EOT token for CLIP's BPE) -> @ text_projection.
#pragma once

#include "config/model_config.h"
#include "model/transformer.h"

#include <torch/nn/modules/embedding.h>

namespace torchclip {

struct TextTowerOptions {
  TextTowerOptions(TextCfg cfg, int64_t output_dim) : cfg_(std::move(cfg)), output_dim_(output_dim) {}
  TORCH_ARG(TextCfg, cfg);
  TORCH_ARG(int64_t, output_dim);
  TORCH_ARG(bool, quick_gelu) = false;
};

class TextTransformerImpl : public torch::nn::Cloneable<TextTransformerImpl> {
 public:
  explicit TextTransformerImpl(TextTowerOptions options) : options(std::move(options)) { reset(); }
  void reset() override;
  /// Token features before pooling: ids [B, T] (T <= context_length) -> ln_final output [B, T, W].
  at::Tensor tokens(const at::Tensor& ids);
  /// ids [B, T] int64 -> [B, output_dim] (not normalised).
  at::Tensor forward(const at::Tensor& ids);
  /// The position each sequence is pooled at: ids [B, T] -> [B] int64.
  at::Tensor pool_index(const at::Tensor& ids) const;
  /// Whether token positions after the last pooled one can be left out (a causal mask and a
  /// pool at or before the end token): the same features from a shorter input.
  static bool padding_can_be_cut(const TextCfg& c) { return !c.no_causal_mask() && c.pool_type() != TextPool::kLast; }
  /// Forward FLOPs of one sequence of `tokens` tokens (default: context_length).
  int64_t flops(int64_t tokens = 0) const;

  TextTowerOptions options;
  torch::nn::Embedding token_embedding = nullptr;
  at::Tensor positional_embedding;  // [ctx, W]; undefined when pos_embed_type is "sinusoidal"
  Transformer transformer = nullptr;
  torch::nn::LayerNorm ln_final = nullptr;
  at::Tensor text_projection;                  // [W, E] when proj_bias is false
  torch::nn::Linear text_projection_linear = nullptr;  // registered as "text_projection" when proj_bias

 private:
  at::Tensor sinusoid_;  // cached fixed encoding (not a parameter, not saved)
};
TORCH_MODULE(TextTransformer);

/// The fixed sinusoidal position encoding of Vaswani et al. (2017): [length, width], with
/// PE[p, 2i] = sin(p / 10000^(2i/width)) and PE[p, 2i+1] = cos(p / 10000^(2i/width)).
at::Tensor sinusoidal_position_encoding(int64_t length, int64_t width);

}  // namespace torchclip
