// CLIP (Radford et al. 2021): an image tower and a text tower projected into one L2-normalised
// embedding space, compared with a learned temperature. The parameter names are OpenCLIP's CLIP
// class (text weights at the root) or CustomTextCLIP (text weights under "text.") when
// custom_text is set, so weights move between the two frameworks unchanged.
#pragma once

#include "config/model_config.h"
#include "model/modified_resnet.h"
#include "model/text_transformer.h"
#include "model/vision_transformer.h"

#include <map>
#include <optional>

namespace torchclip {

/// What CLIP's forward returns; the losses take it as is.
struct ClipOutput {
  at::Tensor image_features;  // [B, E], normalised
  at::Tensor text_features;   // [B, E], normalised
  at::Tensor logit_scale;     // exp(logit_scale): 0-D (or [1] with nonscalar_logit_scale)
  std::optional<at::Tensor> logit_bias;
};

class CLIPImpl : public torch::nn::Cloneable<CLIPImpl> {
 public:
  explicit CLIPImpl(ModelConfig config) : config(std::move(config)) { reset(); }
  void reset() override;

  /// images [B, 3, S, S] -> [B, E].
  at::Tensor encode_image(const at::Tensor& images, bool normalize = false);
  /// The image tower in parts, for pipeline stages: encode_image(x) equals
  /// image_head(image_blocks(image_stem(x), 0, image_block_count())). The stem's output and the
  /// blocks' are the tower's activations (ViT: [B, T, W] tokens; ResNet: [B, C, H, W] maps).
  int64_t image_block_count() const;
  at::Tensor image_stem(const at::Tensor& images);
  at::Tensor image_blocks(const at::Tensor& x, int64_t begin, int64_t end);
  at::Tensor image_head(const at::Tensor& x, bool normalize = false);  // -> [B, E]
  /// Of a parameter or buffer named as in state_dict: for the image tower's, -1 the stem, i
  /// residual block i, image_block_count() the head; nullopt for anything else.
  std::optional<int64_t> image_part(const std::string& name) const;
  /// ids [B, T] int64 -> [B, E].
  at::Tensor encode_text(const at::Tensor& ids, bool normalize = false);
  /// Both towers, normalised, plus the exponentiated scale and the bias.
  ClipOutput forward(const at::Tensor& images, const at::Tensor& ids);
  /// logits_per_image [B_img, B_txt] = exp(logit_scale) * img @ txt^T (+ logit_bias).
  at::Tensor logits(const at::Tensor& image_features, const at::Tensor& text_features) const;
  /// Clamps logit_scale in place to [0, ln 100], as OpenCLIP does after every optimizer step.
  void clamp_logit_scale();

  /// Gradient checkpointing in both towers' transformers (a ResNet image tower has none, as in
  /// OpenCLIP, whose ModifiedResNet ignores the setting).
  void set_grad_checkpointing(bool enabled);

  /// The device the weights are on.
  c10::Device device() const { return logit_scale.device(); }

  /// Forward FLOPs of one image and of one text sequence.
  int64_t image_flops() const;
  int64_t text_flops() const;

  ModelConfig config;
  VisionTransformer vit = nullptr;       // registered as "visual" for a ViT config
  ModifiedResNet resnet = nullptr;       // registered as "visual" for a ResNet config
  TextTransformer text = nullptr;        // its children are registered at the root unless custom_text
  at::Tensor logit_scale, logit_bias;    // logit_bias undefined unless init_logit_bias is set
};
TORCH_MODULE(CLIP);

/// x / max(||x||_2, 1e-12) along the last dimension, as torch.nn.functional.normalize.
at::Tensor l2_normalize(const at::Tensor& x);

/// Parameters and buffers by their OpenCLIP state-dict names, sorted by name.
std::map<std::string, at::Tensor> state_dict(const torch::nn::Module& module);

/// Number of elements in all parameters (buffers excluded), as sum(p.numel()) in PyTorch.
int64_t parameter_count(const torch::nn::Module& module);

}  // namespace torchclip
