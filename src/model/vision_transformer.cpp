#include "model/vision_transformer.h"

#include <cmath>

namespace torchclip {

at::Tensor patch_dropout(const at::Tensor& x, double prob) {
  const int64_t B = x.size(0), N = x.size(1) - 1;
  const int64_t keep = std::max<int64_t>(1, static_cast<int64_t>(N * (1.0 - prob)));
  auto cls = x.slice(1, 0, 1);                                              // [B, 1, W]
  auto idx = at::randn({B, N}, x.options().dtype(at::kFloat));
  idx = std::get<1>(idx.topk(keep, -1));                                   // [B, K]
  auto patches = x.slice(1, 1).gather(1, idx.unsqueeze(-1).expand({B, keep, x.size(2)}));  // [B, K, W]
  return at::cat({cls, patches}, 1);                                        // [B, 1+K, W]
}

void VisionTransformerImpl::reset() {
  const VisionCfg& c = options.cfg();
  const int64_t W = c.width(), P = c.patch_size(), G = c.grid_size();
  conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, W, P).stride(P).bias(false)));
  const double scale = std::pow(static_cast<double>(W), -0.5);
  class_embedding = register_parameter("class_embedding", scale * at::randn({W}));
  positional_embedding = register_parameter("positional_embedding", scale * at::randn({G * G + 1, W}));
  if (!c.no_ln_pre()) ln_pre = register_module("ln_pre", layer_norm(W));
  transformer = register_module(
      "transformer", Transformer(TransformerOptions(W, c.layers()[0], c.heads())
                                     .mlp_ratio(c.mlp_ratio())
                                     .ls_init_value(c.ls_init_value())
                                     .quick_gelu(options.quick_gelu())));
  ln_post = register_module("ln_post", layer_norm(W));
  proj = register_parameter("proj", scale * at::randn({W, options.output_dim()}));
}

at::Tensor VisionTransformerImpl::forward(const at::Tensor& images) { return head(blocks(stem(images), 0, num_blocks())); }

at::Tensor VisionTransformerImpl::stem(const at::Tensor& images) {
  const VisionCfg& c = options.cfg();
  auto x = conv1(images);                       // [B, W, G, G]
  const int64_t B = x.size(0), W = x.size(1);
  x = x.flatten(2).transpose(1, 2);             // [B, G*G, W]
  auto cls = class_embedding.to(x.scalar_type()).view({1, 1, W}).expand({B, 1, W});
  x = at::cat({cls, x}, 1);                     // [B, 1+G*G, W]
  x = x + positional_embedding.to(x.scalar_type());
  if (is_training() && c.patch_dropout() > 0) x = patch_dropout(x, c.patch_dropout());
  return ln_pre ? ln_pre(x) : x;                // [B, T, W]
}

at::Tensor VisionTransformerImpl::blocks(const at::Tensor& x, int64_t begin, int64_t end) {
  return transformer->forward_blocks(x, begin, end);  // [B, T, W]
}

at::Tensor VisionTransformerImpl::head(const at::Tensor& x) {
  const VisionCfg& c = options.cfg();
  auto pool = [&](const at::Tensor& t) {
    return c.pool_type() == VisionPool::kAvg ? t.slice(1, 1).mean(1) : t.select(1, 0);  // [B, W]
  };
  const at::Tensor pooled = c.final_ln_after_pool() ? ln_post(pool(x)) : pool(ln_post(x));
  return at::matmul(pooled, proj);              // [B, E]
}

int64_t VisionTransformerImpl::part_of(const std::string& name) const {
  const std::string blocks_prefix = "transformer.resblocks.";
  if (name.rfind(blocks_prefix, 0) == 0) return std::stoll(name.substr(blocks_prefix.size()));
  return name.rfind("ln_post", 0) == 0 || name == "proj" ? num_blocks() : -1;
}

int64_t VisionTransformerImpl::flops() const {
  const VisionCfg& c = options.cfg();
  const int64_t W = c.width(), P = c.patch_size(), G = c.grid_size();
  const int64_t T = G * G + 1;
  const int64_t patchify = 2 * G * G * W * 3 * P * P;
  return patchify + transformer->flops(T) + 2 * W * options.output_dim();
}

}  // namespace torchclip
