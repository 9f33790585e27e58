// The pre-LN Transformer shared by both towers (Vaswani et al. 2017; Radford et al. 2021),
// with OpenCLIP's module and parameter names so state dicts map one to one:
//   resblocks.N.{ln_1, attn.in_proj_weight, attn.in_proj_bias, attn.out_proj, ls_1.gamma,
//                ln_2, mlp.c_fc, mlp.c_proj, ls_2.gamma}
#pragma once

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <optional>

namespace torchclip {

/// GELU (exact, erf) or QuickGELU x*sigmoid(1.702x), as used by OpenAI's weights.
at::Tensor activation(const at::Tensor& x, bool quick_gelu);

/// y = x W^T + b through at::linear. The C++ frontend's Linear::forward (F::linear) runs
/// matmul and then `+= bias` for inputs of more than 2 dims; at::linear folds the bias into
/// one addmm over the flattened tokens, as PyTorch's nn.Linear does.
inline at::Tensor linear(const torch::nn::Linear& layer, const at::Tensor& x) {
  return at::linear(x, layer->weight, layer->bias);
}

struct TransformerOptions {
  TransformerOptions(int64_t width, int64_t layers, int64_t heads) : width_(width), layers_(layers), heads_(heads) {}
  TORCH_ARG(int64_t, width);
  TORCH_ARG(int64_t, layers);
  TORCH_ARG(int64_t, heads);
  TORCH_ARG(double, mlp_ratio) = 4.0;
  /// LayerScale (Touvron et al. 2021) initial value; unset: no ls_1/ls_2 parameters.
  TORCH_ARG(std::optional<double>, ls_init_value) = std::nullopt;
  TORCH_ARG(bool, quick_gelu) = false;
};

/// Multi-head self-attention with a packed input projection, stored as PyTorch's
/// nn.MultiheadAttention stores it (in_proj_weight [3W, W], in_proj_bias [3W], out_proj), but run
/// through at::scaled_dot_product_attention: no per-call device sync, fused kernels where present.
class SelfAttentionImpl : public torch::nn::Cloneable<SelfAttentionImpl> {
 public:
  SelfAttentionImpl(int64_t width, int64_t heads);
  void reset() override;
  /// x: [B, T, W]. attn_mask: additive [T, T] or [B*, H*, T, T]; is_causal masks j > i.
  at::Tensor forward(const at::Tensor& x, const std::optional<at::Tensor>& attn_mask = std::nullopt,
                     bool is_causal = false);

  int64_t width, heads;
  at::Tensor in_proj_weight, in_proj_bias;
  torch::nn::Linear out_proj = nullptr;
};
TORCH_MODULE(SelfAttention);

/// LayerScale: y = x * gamma, gamma initialised to a small constant.
class LayerScaleImpl : public torch::nn::Cloneable<LayerScaleImpl> {
 public:
  LayerScaleImpl(int64_t dim, double init_value) : dim(dim), init_value(init_value) { reset(); }
  void reset() override;
  at::Tensor forward(const at::Tensor& x) { return x * gamma; }
  int64_t dim;
  double init_value;
  at::Tensor gamma;
};
TORCH_MODULE(LayerScale);

/// Position-wise MLP: c_fc -> GELU/QuickGELU -> c_proj.
class MlpImpl : public torch::nn::Cloneable<MlpImpl> {
 public:
  MlpImpl(int64_t width, int64_t hidden, bool quick_gelu) : width(width), hidden(hidden), quick_gelu(quick_gelu) {
    reset();
  }
  void reset() override;
  at::Tensor forward(const at::Tensor& x) { return linear(c_proj, activation(linear(c_fc, x), quick_gelu)); }
  int64_t width, hidden;
  bool quick_gelu;
  torch::nn::Linear c_fc = nullptr, c_proj = nullptr;
};
TORCH_MODULE(Mlp);

/// x = x + ls_1(attn(ln_1(x))); x = x + ls_2(mlp(ln_2(x))).
class ResidualAttentionBlockImpl : public torch::nn::Cloneable<ResidualAttentionBlockImpl> {
 public:
  explicit ResidualAttentionBlockImpl(TransformerOptions options) : options(std::move(options)) { reset(); }
  void reset() override;
  at::Tensor forward(const at::Tensor& x, const std::optional<at::Tensor>& attn_mask = std::nullopt,
                     bool is_causal = false);

  TransformerOptions options;
  torch::nn::LayerNorm ln_1 = nullptr, ln_2 = nullptr;
  SelfAttention attn = nullptr;
  Mlp mlp = nullptr;
  LayerScale ls_1 = nullptr, ls_2 = nullptr;  // only with ls_init_value
};
TORCH_MODULE(ResidualAttentionBlock);

/// A stack of ResidualAttentionBlocks under the name `resblocks`.
class TransformerImpl : public torch::nn::Cloneable<TransformerImpl> {
 public:
  explicit TransformerImpl(TransformerOptions options) : options(std::move(options)) { reset(); }
  void reset() override;
  /// x: [B, T, W] -> [B, T, W].
  at::Tensor forward(at::Tensor x, const std::optional<at::Tensor>& attn_mask = std::nullopt, bool is_causal = false);
  /// Blocks [begin, end) only (a pipeline stage's share). x: [B, T, W] -> [B, T, W].
  at::Tensor forward_blocks(at::Tensor x, int64_t begin, int64_t end, const std::optional<at::Tensor>& attn_mask = std::nullopt,
                            bool is_causal = false);
  /// Forward FLOPs (2 per multiply-add) of the matrix products for one sequence of T tokens.
  int64_t flops(int64_t tokens) const;

  TransformerOptions options;
  torch::nn::ModuleList resblocks = nullptr;
  /// Gradient checkpointing (OpenCLIP's set_grad_checkpointing, Chen et al. 2016): in training
  /// with gradients on, each block keeps only its input and recomputes its activations in
  /// backward. The same function and gradients, less activation memory, about one more forward.
  bool grad_checkpointing = false;
};
TORCH_MODULE(Transformer);

/// A LayerNorm with OpenCLIP's eps (1e-5).
torch::nn::LayerNorm layer_norm(int64_t width);

}  // namespace torchclip
