// OpenCLIP's ModifiedResNet image tower (Radford et al. 2021, sec. 2.4): a 3-convolution stem with
// average pooling, anti-aliased Bottleneck stages (an avgpool does the striding), and a QKV
// attention pool in place of global average pooling.
#pragma once

#include "model/vision_transformer.h"  // VisionTowerOptions

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>

namespace torchclip {

/// Bottleneck (expansion 4): 1x1 -> 3x3 -> avgpool(stride) -> 1x1, plus a shortcut
/// downsample = avgpool(stride) -> 1x1 conv -> BN (state-dict names downsample.0, downsample.1).
class BottleneckImpl : public torch::nn::Cloneable<BottleneckImpl> {
 public:
  static constexpr int64_t kExpansion = 4;
  BottleneckImpl(int64_t inplanes, int64_t planes, int64_t stride)
      : inplanes(inplanes), planes(planes), stride(stride) {
    reset();
  }
  void reset() override;
  at::Tensor forward(const at::Tensor& x);  // [B, Cin, H, W] -> [B, 4*planes, H/s, W/s]

  int64_t inplanes, planes, stride;
  torch::nn::Conv2d conv1 = nullptr, conv2 = nullptr, conv3 = nullptr;
  torch::nn::BatchNorm2d bn1 = nullptr, bn2 = nullptr, bn3 = nullptr;
  torch::nn::Sequential downsample = nullptr;  // 1x1 conv, BN; the avgpool runs in forward
};
TORCH_MODULE(Bottleneck);

/// Multi-head attention pooling over [mean token; spatial tokens] + positional_embedding; the
/// output is the mean token's attention result, projected by c_proj.
class AttentionPool2dImpl : public torch::nn::Cloneable<AttentionPool2dImpl> {
 public:
  AttentionPool2dImpl(int64_t spacial_dim, int64_t embed_dim, int64_t heads, int64_t output_dim)
      : spacial_dim(spacial_dim), embed_dim(embed_dim), heads(heads), output_dim(output_dim) {
    reset();
  }
  void reset() override;
  at::Tensor forward(const at::Tensor& x);  // [B, C, H, W] -> [B, output_dim]

  int64_t spacial_dim, embed_dim, heads, output_dim;
  at::Tensor positional_embedding;
  torch::nn::Linear q_proj = nullptr, k_proj = nullptr, v_proj = nullptr, c_proj = nullptr;
};
TORCH_MODULE(AttentionPool2d);

class ModifiedResNetImpl : public torch::nn::Cloneable<ModifiedResNetImpl> {
 public:
  explicit ModifiedResNetImpl(VisionTowerOptions options) : options(std::move(options)) { reset(); }
  void reset() override;
  /// images: [B, 3, S, S] -> [B, output_dim] (not normalised): head(blocks(stem(images))).
  at::Tensor forward(const at::Tensor& images);
  /// The forward in three parts, for pipeline stages. stem: [B, 3, S, S] -> [B, w, S/4, S/4]
  /// (three convolutions and the average pool); blocks: Bottlenecks [begin, end) counted across
  /// layer1..layer4; head: the attention pool, [B, 32w, S/32, S/32] -> [B, E].
  at::Tensor stem(const at::Tensor& images);
  at::Tensor blocks(at::Tensor x, int64_t begin, int64_t end);
  at::Tensor head(const at::Tensor& x);
  int64_t num_blocks() const;
  /// The part a parameter or buffer (named within this tower) belongs to: -1 the stem, i
  /// Bottleneck i, num_blocks() the head.
  int64_t part_of(const std::string& name) const;
  /// Forward FLOPs of one image (2 per multiply-add, convolutions and matrix products only).
  int64_t flops() const;

  VisionTowerOptions options;
  torch::nn::Conv2d conv1 = nullptr, conv2 = nullptr, conv3 = nullptr;
  torch::nn::BatchNorm2d bn1 = nullptr, bn2 = nullptr, bn3 = nullptr;
  torch::nn::Sequential layer1 = nullptr, layer2 = nullptr, layer3 = nullptr, layer4 = nullptr;
  AttentionPool2d attnpool = nullptr;
};
TORCH_MODULE(ModifiedResNet);

}  // namespace torchclip
