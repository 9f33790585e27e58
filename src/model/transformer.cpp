#include "model/transformer.h"

#include <ATen/autocast_mode.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/nn/init.h>

#include <cmath>

namespace torchclip {

at::Tensor activation(const at::Tensor& x, bool quick_gelu) {
  return quick_gelu ? x * at::sigmoid(1.702 * x) : at::gelu(x);
}

torch::nn::LayerNorm layer_norm(int64_t width) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({width}).eps(1e-5));
}

SelfAttentionImpl::SelfAttentionImpl(int64_t width, int64_t heads) : width(width), heads(heads) {
  TORCH_CHECK(heads > 0 && width % heads == 0, "SelfAttention: width ", width, " is not divisible by heads ", heads);
  reset();
}

void SelfAttentionImpl::reset() {
  // Initialised as torch.nn.MultiheadAttention: xavier-uniform packed projection, zero biases.
  in_proj_weight = register_parameter("in_proj_weight", at::empty({3 * width, width}));
  in_proj_bias = register_parameter("in_proj_bias", at::zeros({3 * width}));
  out_proj = register_module("out_proj", torch::nn::Linear(width, width));
  torch::nn::init::xavier_uniform_(in_proj_weight);
  torch::NoGradGuard no_grad;
  out_proj->bias.zero_();
}

at::Tensor SelfAttentionImpl::forward(const at::Tensor& x, const std::optional<at::Tensor>& attn_mask,
                                      bool is_causal) {
  const int64_t B = x.size(0), T = x.size(1), D = width / heads;
  auto qkv = at::linear(x, in_proj_weight, in_proj_bias)  // [B, T, 3W]
                 .view({B, T, 3, heads, D})               // [B, T, 3, H, D]
                 .permute({2, 0, 3, 1, 4});               // [3, B, H, T, D]
  std::optional<at::Tensor> mask;
  if (attn_mask) mask = attn_mask->to(x.scalar_type());
  // unbind, not qkv[i]: its backward stacks the three gradients, where three selects would each
  // zero-fill a [3, B, H, T, D] buffer and add them up.
  auto q_k_v = qkv.unbind(0);  // 3 x [B, H, T, D]
  auto y = at::scaled_dot_product_attention(q_k_v[0], q_k_v[1], q_k_v[2], mask, /*dropout_p=*/0.0, is_causal);
  y = y.transpose(1, 2).reshape({B, T, width});  // [B, H, T, D] -> [B, T, W]
  return linear(out_proj, y);
}

void LayerScaleImpl::reset() { gamma = register_parameter("gamma", at::full({dim}, init_value)); }

void MlpImpl::reset() {
  c_fc = register_module("c_fc", torch::nn::Linear(width, hidden));
  c_proj = register_module("c_proj", torch::nn::Linear(hidden, width));
}

void ResidualAttentionBlockImpl::reset() {
  const int64_t w = options.width();
  ln_1 = register_module("ln_1", layer_norm(w));
  attn = register_module("attn", SelfAttention(w, options.heads()));
  if (options.ls_init_value()) ls_1 = register_module("ls_1", LayerScale(w, *options.ls_init_value()));
  ln_2 = register_module("ln_2", layer_norm(w));
  mlp = register_module("mlp", Mlp(w, static_cast<int64_t>(w * options.mlp_ratio()), options.quick_gelu()));
  if (options.ls_init_value()) ls_2 = register_module("ls_2", LayerScale(w, *options.ls_init_value()));
}

at::Tensor ResidualAttentionBlockImpl::forward(const at::Tensor& x, const std::optional<at::Tensor>& attn_mask,
                                               bool is_causal) {
  auto a = attn(ln_1(x), attn_mask, is_causal);
  auto h = x + (ls_1 ? ls_1(a) : a);
  auto m = mlp(ln_2(h));
  return h + (ls_2 ? ls_2(m) : m);
}

void TransformerImpl::reset() {
  resblocks = register_module("resblocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.layers(); ++i) resblocks->push_back(ResidualAttentionBlock(options));
}

namespace {

/// One residual block under activation checkpointing, as torch.utils.checkpoint's reentrant
/// variant: forward runs without recording a graph and saves only the block's input; backward
/// recomputes the block with gradients on (under the autocast state the forward saw) and
/// backpropagates through it, which accumulates the block's parameter gradients directly.
struct BlockCheckpoint : public torch::autograd::Function<BlockCheckpoint> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, int64_t block,
                            const std::optional<at::Tensor>& attn_mask, bool is_causal) {
    ctx->save_for_backward({x});
    ctx->saved_data["block"] = block;
    ctx->saved_data["is_causal"] = is_causal;
    if (attn_mask) ctx->saved_data["attn_mask"] = *attn_mask;
    const at::DeviceType device = x.device().type();
    ctx->saved_data["autocast"] = at::autocast::is_autocast_enabled(device);
    ctx->saved_data["autocast_dtype"] = at::autocast::get_autocast_dtype(device);
    return reinterpret_cast<ResidualAttentionBlockImpl*>(block)->forward(x, attn_mask, is_causal);  // [B, T, W]
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_output) {
    auto x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    auto* block = reinterpret_cast<ResidualAttentionBlockImpl*>(ctx->saved_data["block"].toInt());
    std::optional<at::Tensor> mask;
    if (ctx->saved_data.count("attn_mask")) mask = ctx->saved_data["attn_mask"].toTensor();
    const at::DeviceType device = x.device().type();
    const bool autocast = ctx->saved_data["autocast"].toBool();
    at::Tensor y;
    {
      at::AutoGradMode grad(true);
      const bool was = at::autocast::is_autocast_enabled(device);
      const auto was_dtype = at::autocast::get_autocast_dtype(device);
      at::autocast::set_autocast_enabled(device, autocast);
      at::autocast::set_autocast_dtype(device, ctx->saved_data["autocast_dtype"].toScalarType());
      y = block->forward(x, mask, ctx->saved_data["is_causal"].toBool());  // [B, T, W], recorded this time
      at::autocast::set_autocast_enabled(device, was);
      at::autocast::set_autocast_dtype(device, was_dtype);
      if (autocast) at::autocast::clear_cache();
    }
    torch::autograd::backward({y}, {grad_output[0]});
    return {x.grad(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor TransformerImpl::forward(at::Tensor x, const std::optional<at::Tensor>& attn_mask, bool is_causal) {
  return forward_blocks(std::move(x), 0, static_cast<int64_t>(resblocks->size()), attn_mask, is_causal);
}

at::Tensor TransformerImpl::forward_blocks(at::Tensor x, int64_t begin, int64_t end, const std::optional<at::Tensor>& attn_mask,
                                           bool is_causal) {
  TORCH_CHECK(0 <= begin && begin <= end && end <= static_cast<int64_t>(resblocks->size()), "transformer blocks [", begin,
              ", ", end, ") outside its ", resblocks->size());
  const bool checkpoint = grad_checkpointing && is_training() && at::GradMode::is_enabled() && x.requires_grad();
  for (int64_t i = begin; i < end; ++i) {
    auto* b = resblocks[i]->as<ResidualAttentionBlockImpl>();
    x = checkpoint ? BlockCheckpoint::apply(x, reinterpret_cast<int64_t>(b), attn_mask, is_causal)
                   : b->forward(x, attn_mask, is_causal);  // [B, T, W]
  }
  return x;
}

int64_t TransformerImpl::flops(int64_t T) const {
  const int64_t W = options.width(), hidden = static_cast<int64_t>(W * options.mlp_ratio());
  const int64_t qkv = 2 * T * W * 3 * W, scores = 2 * T * T * W, mix = 2 * T * T * W, out = 2 * T * W * W;
  const int64_t mlp = 2 * T * W * hidden * 2;
  return options.layers() * (qkv + scores + mix + out + mlp);
}

}  // namespace torchclip
