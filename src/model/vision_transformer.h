// Vision Transformer image tower (Dosovitskiy et al. 2021) as OpenCLIP builds it:
// conv1 patchify -> [class token; patches] + positional_embedding -> patch dropout -> ln_pre ->
// transformer -> ln_post -> pool (class token or mean) -> @ proj.
#pragma once

#include "config/model_config.h"
#include "model/transformer.h"

#include <torch/nn/modules/conv.h>

namespace torchclip {

struct VisionTowerOptions {
  VisionTowerOptions(VisionCfg cfg, int64_t output_dim) : cfg_(std::move(cfg)), output_dim_(output_dim) {}
  TORCH_ARG(VisionCfg, cfg);
  TORCH_ARG(int64_t, output_dim);
  TORCH_ARG(bool, quick_gelu) = false;
};

class VisionTransformerImpl : public torch::nn::Cloneable<VisionTransformerImpl> {
 public:
  explicit VisionTransformerImpl(VisionTowerOptions options) : options(std::move(options)) { reset(); }
  void reset() override;
  /// images: [B, 3, S, S] -> [B, output_dim] (not normalised): head(blocks(stem(images))).
  at::Tensor forward(const at::Tensor& images);
  /// The forward in three parts, for pipeline stages. stem: images [B, 3, S, S] -> tokens
  /// [B, T, W] (patchify, class token, positions, patch dropout, ln_pre); blocks: residual blocks
  /// [begin, end), [B, T, W] -> [B, T, W]; head: ln_post, pool and proj, [B, T, W] -> [B, E].
  at::Tensor stem(const at::Tensor& images);
  at::Tensor blocks(const at::Tensor& x, int64_t begin, int64_t end);
  at::Tensor head(const at::Tensor& x);
  int64_t num_blocks() const { return static_cast<int64_t>(transformer->resblocks->size()); }
  /// The part a parameter (named within this tower) belongs to: -1 the stem, i residual block i,
  /// num_blocks() the head.
  int64_t part_of(const std::string& name) const;
  /// Forward FLOPs of one image (2 per multiply-add, matrix products and convolutions only).
  int64_t flops() const;

  VisionTowerOptions options;
  torch::nn::Conv2d conv1 = nullptr;
  at::Tensor class_embedding, positional_embedding, proj;
  torch::nn::LayerNorm ln_pre = nullptr, ln_post = nullptr;  // ln_pre absent with no_ln_pre
  Transformer transformer = nullptr;
};
TORCH_MODULE(VisionTransformer);

/// PatchDropout (Li et al. 2023, FLIP): keeps a random max(1, floor(N*(1-p))) of the N patch
/// tokens per image, always keeping the class token. x: [B, 1+N, W] -> [B, 1+K, W].
at::Tensor patch_dropout(const at::Tensor& x, double prob);

}  // namespace torchclip
