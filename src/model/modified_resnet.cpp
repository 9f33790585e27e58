#include "model/modified_resnet.h"

#include <torch/nn/init.h>

#include <cmath>

namespace torchclip {
namespace {

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(k / 2).bias(false));
}

at::Tensor avg_pool(const at::Tensor& x, int64_t k) { return k > 1 ? at::avg_pool2d(x, {k, k}) : x; }

}  // namespace

void BottleneckImpl::reset() {
  conv1 = register_module("conv1", conv(inplanes, planes, 1));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(planes));
  conv2 = register_module("conv2", conv(planes, planes, 3));
  bn2 = register_module("bn2", torch::nn::BatchNorm2d(planes));
  conv3 = register_module("conv3", conv(planes, planes * kExpansion, 1));
  bn3 = register_module("bn3", torch::nn::BatchNorm2d(planes * kExpansion));
  if (stride > 1 || inplanes != planes * kExpansion) {
    downsample = register_module(
        "downsample", torch::nn::Sequential(conv(inplanes, planes * kExpansion, 1),
                                            torch::nn::BatchNorm2d(planes * kExpansion)));
  }
}

at::Tensor BottleneckImpl::forward(const at::Tensor& x) {
  auto out = at::relu(bn1(conv1(x)));
  out = at::relu(bn2(conv2(out)));
  out = bn3(conv3(avg_pool(out, stride)));
  auto identity = downsample ? downsample->forward(avg_pool(x, stride)) : x;
  return at::relu(out + identity);
}

void AttentionPool2dImpl::reset() {
  positional_embedding = register_parameter(
      "positional_embedding",
      at::randn({spacial_dim * spacial_dim + 1, embed_dim}) / std::sqrt(static_cast<double>(embed_dim)));
  k_proj = register_module("k_proj", torch::nn::Linear(embed_dim, embed_dim));
  q_proj = register_module("q_proj", torch::nn::Linear(embed_dim, embed_dim));
  v_proj = register_module("v_proj", torch::nn::Linear(embed_dim, embed_dim));
  c_proj = register_module("c_proj", torch::nn::Linear(embed_dim, output_dim));
}

at::Tensor AttentionPool2dImpl::forward(const at::Tensor& x_in) {
  const int64_t B = x_in.size(0), C = x_in.size(1), D = C / heads;
  auto x = x_in.flatten(2).transpose(1, 2);               // [B, HW, C]
  x = at::cat({x.mean(1, /*keepdim=*/true), x}, 1);       // [B, 1+HW, C]
  x = x + positional_embedding.to(x.scalar_type());
  const int64_t T = x.size(1);
  // Only the mean token's output is kept, so only its query is computed.
  auto q = linear(q_proj, x.slice(1, 0, 1)).view({B, 1, heads, D}).transpose(1, 2);  // [B, H, 1, D]
  auto k = linear(k_proj, x).view({B, T, heads, D}).transpose(1, 2);                 // [B, H, T, D]
  auto v = linear(v_proj, x).view({B, T, heads, D}).transpose(1, 2);                 // [B, H, T, D]
  auto y = at::scaled_dot_product_attention(q, k, v);                        // [B, H, 1, D]
  return linear(c_proj, y.transpose(1, 2).reshape({B, C}));                          // [B, output_dim]
}

void ModifiedResNetImpl::reset() {
  const VisionCfg& c = options.cfg();
  const int64_t w = c.width();
  conv1 = register_module("conv1", conv(3, w / 2, 3, 2));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(w / 2));
  conv2 = register_module("conv2", conv(w / 2, w / 2, 3));
  bn2 = register_module("bn2", torch::nn::BatchNorm2d(w / 2));
  conv3 = register_module("conv3", conv(w / 2, w, 3));
  bn3 = register_module("bn3", torch::nn::BatchNorm2d(w));
  int64_t inplanes = w;
  auto make_layer = [&](int64_t planes, int64_t blocks, int64_t stride) {
    torch::nn::Sequential layer;
    layer->push_back(Bottleneck(inplanes, planes, stride));
    inplanes = planes * BottleneckImpl::kExpansion;
    for (int64_t i = 1; i < blocks; ++i) layer->push_back(Bottleneck(inplanes, planes, 1));
    return layer;
  };
  layer1 = register_module("layer1", make_layer(w, c.layers()[0], 1));
  layer2 = register_module("layer2", make_layer(w * 2, c.layers()[1], 2));
  layer3 = register_module("layer3", make_layer(w * 4, c.layers()[2], 2));
  layer4 = register_module("layer4", make_layer(w * 8, c.layers()[3], 2));
  attnpool = register_module("attnpool", AttentionPool2d(c.image_size() / 32, w * 32, c.heads(), options.output_dim()));

  // OpenCLIP's init: attention-pool projections ~ N(0, C^-0.5); the last BN of each residual
  // branch starts at zero, so every block starts as the identity.
  torch::NoGradGuard no_grad;
  const double std = std::pow(static_cast<double>(w * 32), -0.5);
  for (auto* lin : {&attnpool->q_proj, &attnpool->k_proj, &attnpool->v_proj, &attnpool->c_proj}) {
    torch::nn::init::normal_((*lin)->weight, 0.0, std);
  }
  for (const auto& layer : {layer1, layer2, layer3, layer4}) {
    for (const auto& block : layer->children()) block->as<BottleneckImpl>()->bn3->weight.zero_();
  }
}

at::Tensor ModifiedResNetImpl::forward(const at::Tensor& images) { return head(blocks(stem(images), 0, num_blocks())); }

at::Tensor ModifiedResNetImpl::stem(const at::Tensor& images) {
  auto x = at::relu(bn1(conv1(images)));  // [B, w/2, S/2, S/2]
  x = at::relu(bn2(conv2(x)));
  x = at::relu(bn3(conv3(x)));            // [B, w, S/2, S/2]
  return avg_pool(x, 2);                  // [B, w, S/4, S/4]
}

int64_t ModifiedResNetImpl::num_blocks() const {
  const auto& l = options.cfg().layers();
  return l[0] + l[1] + l[2] + l[3];
}

at::Tensor ModifiedResNetImpl::blocks(at::Tensor x, int64_t begin, int64_t end) {
  TORCH_CHECK(0 <= begin && begin <= end && end <= num_blocks(), "ResNet blocks [", begin, ", ", end, ") outside its ",
              num_blocks());
  int64_t i = 0;
  for (const auto& layer : {layer1, layer2, layer3, layer4}) {
    for (const auto& block : layer->children()) {
      if (i >= begin && i < end) x = block->as<BottleneckImpl>()->forward(x);  // [B, C, H, W] -> [B, C', H', W']
      ++i;
    }
  }
  return x;  // after layer4: [B, 32w, S/32, S/32]
}

at::Tensor ModifiedResNetImpl::head(const at::Tensor& x) { return attnpool(x); }  // [B, E]

int64_t ModifiedResNetImpl::part_of(const std::string& name) const {
  if (name.rfind("attnpool.", 0) == 0) return num_blocks();
  if (name.rfind("layer", 0) != 0) return -1;  // conv1..3, bn1..3
  const int64_t layer = name[5] - '1';         // "layerL.j.<rest>"
  const auto& l = options.cfg().layers();
  int64_t first = 0;
  for (int64_t k = 0; k < layer; ++k) first += l[k];
  return first + std::stoll(name.substr(7));
}

int64_t ModifiedResNetImpl::flops() const {
  const VisionCfg& c = options.cfg();
  const int64_t w = c.width();
  int64_t s = c.image_size() / 2;  // spatial size after the strided stem conv
  auto conv_flops = [](int64_t cin, int64_t cout, int64_t k, int64_t hw) { return 2 * cin * cout * k * k * hw * hw; };
  int64_t f = conv_flops(3, w / 2, 3, s) + conv_flops(w / 2, w / 2, 3, s) + conv_flops(w / 2, w, 3, s);
  s /= 2;
  int64_t inplanes = w;
  for (int stage = 0; stage < 4; ++stage) {
    const int64_t planes = w << stage, stride = stage == 0 ? 1 : 2;
    for (int64_t b = 0; b < c.layers()[stage]; ++b) {
      const int64_t st = b == 0 ? stride : 1, out_s = s / st;
      f += conv_flops(inplanes, planes, 1, s) + conv_flops(planes, planes, 3, s) + conv_flops(planes, planes * 4, 1, out_s);
      if (st > 1 || inplanes != planes * 4) f += conv_flops(inplanes, planes * 4, 1, out_s);
      inplanes = planes * 4;
      s = out_s;
    }
  }
  const int64_t C = w * 32, T = s * s + 1;
  // q for one token, k and v for T tokens, scores and mixing for one query row, c_proj.
  f += 2 * C * C + 2 * 2 * T * C * C + 2 * 2 * T * C + 2 * C * options.output_dim();
  return f;
}

}  // namespace torchclip
