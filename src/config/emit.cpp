// The one emitter: walks config/schema.h with a YAML::Emitter.
#include "config/emit.h"

#include "config/schema.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <array>
#include <optional>
#include <type_traits>
#include <vector>

namespace torchclip {
namespace {

/// The shortest text that reads back as the same double, in a form every YAML reader takes as a
/// number (PyYAML needs a dot in "1.0e-06").
std::string yaml_double(double v) {
  std::string s = fmt::format("{}", v);
  const size_t e = s.find('e');
  if (e != std::string::npos && s.find('.') == std::string::npos) s.insert(e, ".0");
  if (s == "inf") return ".inf";
  if (s == "-inf") return "-.inf";
  if (s == "nan") return ".nan";
  return s;
}

class EmitVisitor {
 public:
  static constexpr bool kReading = false;
  explicit EmitVisitor(YAML::Emitter& e) : e_(e) {}

  template <typename T>
  void field(const std::string& key, const T& value, const Bound& = {}) {
    e_ << YAML::Key << key << YAML::Value;
    if constexpr (std::is_same_v<T, std::optional<double>>) {
      if (value) e_ << yaml_double(*value);
      else e_ << YAML::Null;
    } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
      if (value.size() == 1) e_ << value[0];  // a ViT depth; four ResNet stages as a list
      else e_ << YAML::Flow << value;
    } else if constexpr (std::is_same_v<T, std::array<double, 2>>) {
      e_ << YAML::Flow << YAML::BeginSeq << yaml_double(value[0]) << yaml_double(value[1]) << YAML::EndSeq;
    } else if constexpr (std::is_enum_v<T>) {
      e_ << enum_name(value);
    } else if constexpr (std::is_same_v<T, std::string>) {
      e_ << YAML::DoubleQuoted << value;
    } else if constexpr (std::is_same_v<T, double>) {
      e_ << yaml_double(value);
    } else {
      e_ << value;
    }
  }
  template <typename T>
  void nullable_field(const std::string& key, const T& value) { field(key, value); }
  void choice(const std::string& key, const std::string& value, const std::vector<std::string>&) {
    e_ << YAML::Key << key << YAML::Value << value;
  }
  template <typename S>
  void child(const std::string& key, S& value) {
    e_ << YAML::Key << key << YAML::Value << YAML::BeginMap;
    visit_fields(*this, value);
    e_ << YAML::EndMap;
  }
  void inert(const std::string&, const std::string&, const std::string&) {}
  void ignore(std::initializer_list<const char*>) {}

 private:
  YAML::Emitter& e_;
};

}  // namespace

std::string to_yaml(const ModelConfig& cfg) {
  YAML::Emitter e;
  EmitVisitor v(e);
  ModelConfig c = cfg;  // the schema visits mutable members; nothing is changed
  e << YAML::BeginMap;
  visit_fields(v, c);
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

std::string to_yaml(const TrainConfig& cfg) {
  YAML::Emitter e;
  EmitVisitor v(e);
  TrainConfig c = cfg;
  e << YAML::Comment(fmt::format("effective training config (from {}, model {})", c.source(), c.model_name()));
  e << YAML::BeginMap;
  v.child("model", c.model());
  v.field("tokenizer", c.tokenizer());
  visit_sections(v, c);
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

}  // namespace torchclip
