// Options of the pluggable losses: parsed from a `loss:` mapping by the config module (keys in
// config/schema.h), built into modules by make_loss() in loss/loss.h. Free of heavy torch
// headers so the config code stays light.
#pragma once

#include "config/enums.h"

#include <torch/arg.h>

#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace YAML {
class Node;
}

namespace torchclip {

/// How features from other data-parallel ranks enter the loss (OpenCLIP's ClipLoss arguments).
struct DistributedLossOptions {
  /// Each rank computes logits only for its own rows against all gathered columns.
  TORCH_ARG(bool, local_loss) = false;
  /// Gradients flow through the all-gather; otherwise only through this rank's own slot.
  TORCH_ARG(bool, gather_with_grad) = false;
};

/// `clip`: OpenCLIP's symmetric InfoNCE with the model's learnable temperature.
struct ClipLossOptions {};

/// `infonce`: InfoNCE (van den Oord et al. 2018) with a choice of directions, temperature and
/// extra negatives.
struct InfoNCELossOptions {
  TORCH_ARG(Direction, direction) = Direction::kBoth;
  /// A fixed temperature tau (logits = sim / tau). Unset: the model's learned logit_scale.
  TORCH_ARG(std::optional<double>, temperature) = std::nullopt;
};

/// `contrastive`: pairwise margin loss (Hadsell, Chopra & LeCun 2006) over positive pairs and
/// in-batch negatives.
struct ContrastiveLossOptions {
  TORCH_ARG(double, margin) = 0.5;
  /// cosine (1 - cos) or euclidean (L2 between the normalised features).
  TORCH_ARG(Distance, distance) = Distance::kCosine;
};

/// `triplet`: margin loss with in-batch negative mining, image->text and text->image averaged.
struct TripletLossOptions {
  TORCH_ARG(double, margin) = 0.2;
  TORCH_ARG(Distance, distance) = Distance::kCosine;
  /// hardest (VSE++), semi-hard (FaceNet) or all.
  TORCH_ARG(Mining, mining) = Mining::kHardest;
};

/// `siglip`: pairwise sigmoid loss (Zhai et al. 2023) with the model's logit_bias.
struct SigLipLossOptions {};

using LossOptions = std::variant<ClipLossOptions, InfoNCELossOptions, ContrastiveLossOptions,
                                 TripletLossOptions, SigLipLossOptions>;

/// A loss chosen by name, with its hyperparameters.
struct LossConfig {
  TORCH_ARG(std::string, name) = "clip";
  TORCH_ARG(LossOptions, options) = ClipLossOptions{};
  TORCH_ARG(DistributedLossOptions, distributed) = {};
};

/// The registered loss names, in a fixed order: clip, infonce, contrastive, triplet, siglip.
const std::vector<std::string>& loss_names();

/// Default options of the loss called `name` (one of loss_names()).
LossOptions default_loss_options(const std::string& name);

/// Parses a `loss:` mapping ({name: ..., <hyperparameters>}). Throws ConfigError.
LossConfig parse_loss_config(const YAML::Node& node, const std::string& source);

}  // namespace torchclip
