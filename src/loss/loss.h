// Pluggable contrastive losses. Every loss sees the same input (this rank's normalised features
// plus the model's scale and bias) and the same view of other data-parallel ranks, so a
// distributed wrapper only has to supply a FeatureGather; no loss's math changes.
#pragma once

#include "config/loss_config.h"

#include <torch/nn/cloneable.h>

#include <memory>

namespace torchclip {

/// One step's input to a loss.
struct LossInput {
  at::Tensor image_features;  // [n, E], L2-normalised, this rank's rows
  at::Tensor text_features;   // [n, E], L2-normalised; row i pairs with image row i
  at::Tensor logit_scale;     // 0-D or [1]: exp of the model's learned log-scale
  std::optional<at::Tensor> logit_bias;            // 0-D or [1]: SigLIP's bias
  std::optional<at::Tensor> extra_text_features;   // [m, E] extra negatives for image->text (infonce)
  std::optional<at::Tensor> extra_image_features;  // [m, E] extra negatives for text->image (infonce)
};

/// Gathers a tensor from every data-parallel rank. The single-process default returns {local}.
class FeatureGather {
 public:
  virtual ~FeatureGather() = default;
  virtual int64_t rank() const { return 0; }
  virtual int64_t world_size() const { return 1; }
  /// All ranks' tensors in rank order. With `with_grad`, gradients flow back to every rank's
  /// tensor; without, the result may be detached (the loss puts `local` back in its own slot).
  virtual std::vector<at::Tensor> all_gather(const at::Tensor& local, bool with_grad) const { return {local}; }
};

/// The rows a rank computes its loss over, and the columns they are compared with.
/// Row r's positive is column (offset + r).
struct PairView {
  at::Tensor image_rows, text_rows;  // [R, E]
  at::Tensor image_cols, text_cols;  // [C, E]
  int64_t offset = 0;
};

/// Base class of all losses: a module (it may own parameters) mapping a LossInput to a scalar.
class ContrastiveLossImpl : public torch::nn::Module {
 public:
  explicit ContrastiveLossImpl(std::string name) : torch::nn::Module(std::move(name)) {}
  virtual at::Tensor forward(const LossInput& input) = 0;

  /// Sets how other ranks' features are obtained (OpenCLIP's local_loss / gather_with_grad).
  void set_distributed(std::shared_ptr<const FeatureGather> gather, DistributedLossOptions options);
  const DistributedLossOptions& distributed() const { return options_; }

 protected:
  /// Applies the distributed options to local features (OpenCLIP's gather_features semantics).
  PairView pairs(const at::Tensor& image_features, const at::Tensor& text_features) const;
  /// Labels for the rows of a PairView: offset + arange(R).
  static at::Tensor labels(const PairView& v);

 private:
  std::shared_ptr<const FeatureGather> gather_ = std::make_shared<FeatureGather>();
  DistributedLossOptions options_;
};

/// A loss as a module holder: `auto loss = make_loss(cfg); loss->forward(input)`.
using ContrastiveLoss = std::shared_ptr<ContrastiveLossImpl>;

/// Builds the loss named in `config` with its hyperparameters.
/// An unknown name throws, listing loss_names().
ContrastiveLoss make_loss(const LossConfig& config);

/// Convenience: the loss called `name` with its default hyperparameters.
ContrastiveLoss make_loss(const std::string& name);

}  // namespace torchclip
