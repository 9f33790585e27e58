// The five losses. Each is written once over a PairView (rows x columns, positives at
// column offset + row), which covers the single-process case and both of OpenCLIP's distributed
// modes: global (rows = columns = everything gathered) and local_loss (rows = this rank's).
#include "loss/loss.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <limits>

namespace torchclip {

void ContrastiveLossImpl::set_distributed(std::shared_ptr<const FeatureGather> gather,
                                          DistributedLossOptions options) {
  TORCH_CHECK(gather, "set_distributed: gather must not be null");
  gather_ = std::move(gather);
  options_ = options;
}

PairView ContrastiveLossImpl::pairs(const at::Tensor& image_features, const at::Tensor& text_features) const {
  TORCH_CHECK(image_features.dim() == 2 && text_features.sizes() == image_features.sizes(),
              name(), ": expected image and text features of the same shape [n, E], got ", image_features.sizes(),
              " and ", text_features.sizes());
  PairView v;
  if (gather_->world_size() == 1) {
    v.image_rows = v.image_cols = image_features;
    v.text_rows = v.text_cols = text_features;
    return v;
  }
  const int64_t rank = gather_->rank();
  auto all_image = gather_->all_gather(image_features, options_.gather_with_grad());
  auto all_text = gather_->all_gather(text_features, options_.gather_with_grad());
  if (!options_.gather_with_grad()) {
    // Gradients reach this rank's own features only, through its own slot.
    all_image[rank] = image_features;
    all_text[rank] = text_features;
  }
  v.image_cols = at::cat(all_image, 0);  // [N_global, E]
  v.text_cols = at::cat(all_text, 0);
  if (options_.local_loss()) {
    v.image_rows = image_features;
    v.text_rows = text_features;
    for (int64_t r = 0; r < rank; ++r) v.offset += all_image[r].size(0);
  } else {
    v.image_rows = v.image_cols;
    v.text_rows = v.text_cols;
  }
  return v;
}

at::Tensor ContrastiveLossImpl::labels(const PairView& v) {
  return at::arange(v.offset, v.offset + v.image_rows.size(0), v.image_rows.options().dtype(at::kLong));
}

namespace {

at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& labels) {
  return at::cross_entropy_loss(logits, labels);
}

/// Pairwise distances between rows of a [R, E] and rows of b [C, E]: [R, C].
at::Tensor distance(const at::Tensor& a, const at::Tensor& b, Distance kind) {
  auto dot = at::matmul(a, b.t());  // [R, C]
  if (kind == Distance::kCosine) {
    auto na = a.norm(2, -1, true), nb = b.norm(2, -1, true);
    return 1 - dot / (na * nb.t()).clamp_min(1e-12);
  }
  auto sq = a.pow(2).sum(-1, true) + b.pow(2).sum(-1, true).t() - 2 * dot;
  return sq.clamp_min(1e-12).sqrt();  // clamped so identical vectors give a finite gradient
}

/// Boolean [R, C] mask of the positive pair in each row.
at::Tensor positive_mask(int64_t rows, int64_t cols, int64_t offset, const at::TensorOptions& opts) {
  auto r = at::arange(rows, opts.dtype(at::kLong)).unsqueeze(1);  // [R, 1]
  auto c = at::arange(cols, opts.dtype(at::kLong)).unsqueeze(0);  // [1, C]
  return c.eq(r + offset);                                         // [R, C]
}

class ClipLossImpl : public ContrastiveLossImpl {
 public:
  ClipLossImpl() : ContrastiveLossImpl("ClipLoss") {}
  at::Tensor forward(const LossInput& in) override {
    auto v = pairs(in.image_features, in.text_features);
    auto y = labels(v);
    auto logits_per_image = in.logit_scale * at::matmul(v.image_rows, v.text_cols.t());  // [R, C]
    auto logits_per_text = in.logit_scale * at::matmul(v.text_rows, v.image_cols.t());   // [R, C]
    return (cross_entropy(logits_per_image, y) + cross_entropy(logits_per_text, y)) / 2;
  }
};

class InfoNCELossImpl : public ContrastiveLossImpl {
 public:
  explicit InfoNCELossImpl(InfoNCELossOptions o) : ContrastiveLossImpl("InfoNCELoss"), o_(std::move(o)) {}
  at::Tensor forward(const LossInput& in) override {
    auto v = pairs(in.image_features, in.text_features);
    auto y = labels(v);
    at::Tensor scale = o_.temperature() ? at::scalar_tensor(1.0 / *o_.temperature(), in.image_features.options())
                                        : in.logit_scale;
    auto with_extra = [](const at::Tensor& cols, const std::optional<at::Tensor>& extra) {
      return extra ? at::cat({cols, *extra}, 0) : cols;  // [C (+ m), E]
    };
    at::Tensor total = at::zeros({}, in.image_features.options());
    int terms = 0;
    if (o_.direction() != Direction::kTextToImage) {
      auto cols = with_extra(v.text_cols, in.extra_text_features);
      total = total + cross_entropy(scale * at::matmul(v.image_rows, cols.t()), y);
      ++terms;
    }
    if (o_.direction() != Direction::kImageToText) {
      auto cols = with_extra(v.image_cols, in.extra_image_features);
      total = total + cross_entropy(scale * at::matmul(v.text_rows, cols.t()), y);
      ++terms;
    }
    return total / terms;
  }

 private:
  InfoNCELossOptions o_;
};

class PairwiseContrastiveLossImpl : public ContrastiveLossImpl {
 public:
  explicit PairwiseContrastiveLossImpl(ContrastiveLossOptions o)
      : ContrastiveLossImpl("ContrastiveLoss"), o_(std::move(o)) {}
  /// 0.5 * mean over positives of d^2 + 0.5 * mean over negatives of max(0, margin - d)^2.
  at::Tensor forward(const LossInput& in) override {
    auto v = pairs(in.image_features, in.text_features);
    auto d = distance(v.image_rows, v.text_cols, o_.distance());  // [R, C]
    auto pos = positive_mask(d.size(0), d.size(1), v.offset, d.options());
    auto pos_term = d.masked_select(pos).pow(2).mean();
    auto neg = d.masked_select(pos.logical_not());
    auto neg_term = neg.numel() > 0 ? (o_.margin() - neg).clamp_min(0).pow(2).mean() : at::zeros({}, d.options());
    return 0.5 * pos_term + 0.5 * neg_term;
  }

 private:
  ContrastiveLossOptions o_;
};

class TripletLossImpl : public ContrastiveLossImpl {
 public:
  explicit TripletLossImpl(TripletLossOptions o) : ContrastiveLossImpl("TripletLoss"), o_(std::move(o)) {}
  at::Tensor forward(const LossInput& in) override {
    auto v = pairs(in.image_features, in.text_features);
    return (direction(v.image_rows, v.text_cols, v.offset) + direction(v.text_rows, v.image_cols, v.offset)) / 2;
  }

 private:
  /// Anchors [R, E] against candidates [C, E]; anchor r's positive is candidate offset + r.
  at::Tensor direction(const at::Tensor& anchors, const at::Tensor& candidates, int64_t offset) const {
    auto d = distance(anchors, candidates, o_.distance());  // [R, C]
    const int64_t R = d.size(0), C = d.size(1);
    auto pos = positive_mask(R, C, offset, d.options());
    auto d_ap = d.masked_select(pos).view({R, 1});           // [R, 1]
    if (C == 1) return at::zeros({}, d.options());           // no negatives
    const double inf = std::numeric_limits<double>::infinity();
    if (o_.mining() == Mining::kAll) {
      auto hinge = (o_.margin() + d_ap - d).clamp_min(0);    // [R, C]
      return hinge.masked_select(pos.logical_not()).mean();
    }
    at::Tensor d_an;                                         // [R, 1]
    if (o_.mining() == Mining::kHardest) {
      d_an = d.masked_fill(pos, inf).amin(1, true);
    } else {
      // Semi-hard (Schroff et al. 2015, as tf-addons): the closest negative farther than the
      // positive; where none is, the farthest negative.
      auto outside = pos.logical_not().logical_and(d.gt(d_ap));
      auto nearest_outside = d.masked_fill(outside.logical_not(), inf).amin(1, true);
      auto farthest = d.masked_fill(pos, -inf).amax(1, true);
      d_an = at::where(outside.any(1, true), nearest_outside, farthest);
    }
    return (o_.margin() + d_ap - d_an).clamp_min(0).mean();
  }

  TripletLossOptions o_;
};

class SigLipLossImpl : public ContrastiveLossImpl {
 public:
  SigLipLossImpl() : ContrastiveLossImpl("SigLipLoss") {}
  /// -sum(log sigmoid(z_ij * (s * <x_i, y_j> + b))) / R with z = +1 on positives, -1 elsewhere.
  at::Tensor forward(const LossInput& in) override {
    TORCH_CHECK(in.logit_bias.has_value(),
                "siglip: the model has no logit_bias; set init_logit_bias (e.g. -10) and init_logit_scale "
                "(e.g. 2.302585, ln 10) in the model config");
    auto v = pairs(in.image_features, in.text_features);
    auto logits = in.logit_scale * at::matmul(v.image_rows, v.text_cols.t()) + *in.logit_bias;  // [R, C]
    auto pos = positive_mask(logits.size(0), logits.size(1), v.offset, logits.options());
    auto z = pos.to(logits.scalar_type()) * 2 - 1;                                         // [R, C]
    return -at::log_sigmoid(z * logits).sum() / logits.size(0);
  }
};

}  // namespace

ContrastiveLoss make_loss(const LossConfig& config) {
  ContrastiveLoss loss = std::visit(
      [](const auto& o) -> ContrastiveLoss {
        using T = std::decay_t<decltype(o)>;
        if constexpr (std::is_same_v<T, ClipLossOptions>) return std::make_shared<ClipLossImpl>();
        if constexpr (std::is_same_v<T, InfoNCELossOptions>) return std::make_shared<InfoNCELossImpl>(o);
        if constexpr (std::is_same_v<T, ContrastiveLossOptions>) return std::make_shared<PairwiseContrastiveLossImpl>(o);
        if constexpr (std::is_same_v<T, TripletLossOptions>) return std::make_shared<TripletLossImpl>(o);
        if constexpr (std::is_same_v<T, SigLipLossOptions>) return std::make_shared<SigLipLossImpl>();
      },
      config.options());
  loss->set_distributed(std::make_shared<FeatureGather>(), config.distributed());
  return loss;
}

ContrastiveLoss make_loss(const std::string& name) {
  return make_loss(LossConfig().name(name).options(default_loss_options(name)));
}

}  // namespace torchclip
