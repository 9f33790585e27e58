// Loss configs: the registered names and a `loss:` mapping read through the schema.
#include "config/loss_config.h"

#include "config/reader.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace torchclip {

using detail::Reader;

const std::vector<std::string>& loss_names() {
  static const std::vector<std::string> names = {"clip", "infonce", "contrastive", "triplet", "siglip"};
  return names;
}

LossOptions default_loss_options(const std::string& name) {
  if (name == "infonce") return InfoNCELossOptions{};
  if (name == "contrastive") return ContrastiveLossOptions{};
  if (name == "triplet") return TripletLossOptions{};
  if (name == "siglip") return SigLipLossOptions{};
  if (name == "clip") return ClipLossOptions{};
  throw ConfigError(fmt::format("unknown loss '{}'; valid: {}", name, fmt::join(loss_names(), ", ")));
}

LossConfig parse_loss_config(const YAML::Node& node, const std::string& source) {
  LossConfig c;
  Reader r(node, source, "loss");
  detail::ReadVisitor v(r);
  visit_fields(v, c);
  r.finish();
  return c;
}

}  // namespace torchclip
