#include "model/clip.h"

#include <cmath>

namespace torchclip {

at::Tensor l2_normalize(const at::Tensor& x) {
  return x / x.norm(2, -1, /*keepdim=*/true).clamp_min(1e-12);  // as torch.nn.functional.normalize
}

void CLIPImpl::reset() {
  validate(config);
  const bool quick = config.quick_gelu();
  const VisionCfg& v = config.vision_cfg();
  // OpenCLIP's ModifiedResNet uses ReLU throughout; quick_gelu only affects Transformers.
  VisionTowerOptions vo = VisionTowerOptions(v, config.embed_dim()).quick_gelu(quick);
  if (v.is_resnet()) {
    resnet = register_module("visual", ModifiedResNet(vo));
  } else {
    vit = register_module("visual", VisionTransformer(vo));
  }
  text = TextTransformer(TextTowerOptions(config.text_cfg(), config.embed_dim()).quick_gelu(quick));
  if (config.custom_text()) {
    register_module("text", text);
  } else {
    // OpenCLIP's CLIP class keeps the text tower's pieces at the root of the state dict.
    register_module("token_embedding", text->token_embedding);
    if (text->positional_embedding.defined()) register_parameter("positional_embedding", text->positional_embedding);
    register_module("transformer", text->transformer);
    register_module("ln_final", text->ln_final);
    if (text->text_projection.defined()) register_parameter("text_projection", text->text_projection);
    if (text->text_projection_linear) register_module("text_projection", text->text_projection_linear);
  }
  std::vector<int64_t> shape = config.nonscalar_logit_scale() ? std::vector<int64_t>{1} : std::vector<int64_t>{};
  logit_scale = register_parameter("logit_scale", at::full(shape, config.init_logit_scale()));
  if (config.init_logit_bias()) logit_bias = register_parameter("logit_bias", at::full(shape, *config.init_logit_bias()));
}

at::Tensor CLIPImpl::encode_image(const at::Tensor& images, bool normalize) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "encode_image: expected images [batch, 3, H, W], got ",
              images.sizes());
  auto f = vit ? vit(images) : resnet(images);  // [B, E]
  return normalize ? l2_normalize(f) : f;
}

int64_t CLIPImpl::image_block_count() const { return vit ? vit->num_blocks() : resnet->num_blocks(); }

at::Tensor CLIPImpl::image_stem(const at::Tensor& images) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "image_stem: expected images [batch, 3, H, W], got ", images.sizes());
  return vit ? vit->stem(images) : resnet->stem(images);
}

at::Tensor CLIPImpl::image_blocks(const at::Tensor& x, int64_t begin, int64_t end) {
  return vit ? vit->blocks(x, begin, end) : resnet->blocks(x, begin, end);
}

at::Tensor CLIPImpl::image_head(const at::Tensor& x, bool normalize) {
  auto f = vit ? vit->head(x) : resnet->head(x);  // [B, E]
  return normalize ? l2_normalize(f) : f;
}

std::optional<int64_t> CLIPImpl::image_part(const std::string& name) const {
  const std::string prefix = "visual.";
  if (name.rfind(prefix, 0) != 0) return std::nullopt;
  const std::string inner = name.substr(prefix.size());
  return vit ? vit->part_of(inner) : resnet->part_of(inner);
}

at::Tensor CLIPImpl::encode_text(const at::Tensor& ids, bool normalize) {
  auto f = text(ids);  // [B, E]
  return normalize ? l2_normalize(f) : f;
}

ClipOutput CLIPImpl::forward(const at::Tensor& images, const at::Tensor& ids) {
  ClipOutput out;
  out.image_features = encode_image(images, true);
  out.text_features = encode_text(ids, true);
  out.logit_scale = logit_scale.exp();
  if (logit_bias.defined()) out.logit_bias = logit_bias;
  return out;
}

at::Tensor CLIPImpl::logits(const at::Tensor& image_features, const at::Tensor& text_features) const {
  auto l = logit_scale.exp() * at::matmul(image_features, text_features.t());  // [B_img, B_txt]
  return logit_bias.defined() ? l + logit_bias : l;
}

void CLIPImpl::set_grad_checkpointing(bool enabled) {
  if (vit) vit->transformer->grad_checkpointing = enabled;
  text->transformer->grad_checkpointing = enabled;
}

void CLIPImpl::clamp_logit_scale() {
  torch::NoGradGuard no_grad;
  logit_scale.clamp_(0.0, std::log(100.0));
}

int64_t CLIPImpl::image_flops() const { return vit ? vit->flops() : resnet->flops(); }
int64_t CLIPImpl::text_flops() const { return text->flops(); }

std::map<std::string, at::Tensor> state_dict(const torch::nn::Module& module) {
  std::map<std::string, at::Tensor> out;
  for (const auto& p : module.named_parameters()) out[p.key()] = p.value();
  for (const auto& b : module.named_buffers()) out[b.key()] = b.value();
  return out;
}

int64_t parameter_count(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

}  // namespace torchclip
