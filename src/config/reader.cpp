#include "config/reader.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <ios>
#include <map>

namespace torchclip {

namespace detail {

namespace {

/// yaml-cpp keeps every pair of a mapping, and lookups take the first of a repeated key: a
/// repeated key is an error naming both lines, in every mapping of the file.
void check_unique_keys(const YAML::Node& node, const std::string& path) {
  if (node.IsMap()) {
    std::map<std::string, int> first_line;
    for (const auto& kv : node) {
      const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : std::string();
      const int line = kv.first.Mark().line + 1;
      auto [it, inserted] = first_line.emplace(key, line);
      if (!inserted)
        throw ConfigError(fmt::format("{}:{}: key '{}' repeats the one on line {}; each key may appear once", path, line,
                                      key, it->second));
      check_unique_keys(kv.second, path);
    }
  } else if (node.IsSequence()) {
    for (const auto& e : node) check_unique_keys(e, path);
  }
}

}  // namespace

YAML::Node load_yaml_file(const std::string& path) {
  // yaml-cpp opens a folder and throws std::ios_base::failure at its first read, leaking its buffer.
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw ConfigError(fmt::format("{}: is a folder, not a YAML file", path));
  try {
    YAML::Node root = YAML::LoadFile(path);
    check_unique_keys(root, path);
    return root;
  } catch (const YAML::BadFile&) {
    throw ConfigError(fmt::format("{}: cannot open the file", path));
  } catch (const std::ios_base::failure& e) {
    throw ConfigError(fmt::format("{}: cannot read the file: {}", path, e.what()));
  } catch (const YAML::ParserException& e) {
    throw ConfigError(fmt::format("{}:{}: not valid YAML: {}", path, e.mark.line + 1, e.msg));
  }
}

void apply_override(YAML::Node& root, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw ConfigError(fmt::format("override '{}': expected KEY=VALUE with a dotted key, e.g. optim.lr=1e-3", assignment));
  const std::string key = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    size_t dot = key.find('.', start);
    parts.push_back(key.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  YAML::Node parsed(std::string{});  // "key=" sets an empty string
  try {
    if (!value.empty()) parsed = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    throw ConfigError(fmt::format("override '{}': the value is not valid YAML: {}", assignment, e.msg));
  }
  if (!root.IsNull() && !root.IsMap())  // yaml-cpp's operator[] would throw BadSubscript, naming no file
    throw ConfigError(fmt::format("override '{}': the config is not a mapping of keys", assignment));
  // yaml-cpp nodes are handles: walk with copies of the handles, assigning through them.
  std::vector<YAML::Node> path = {root};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node next = path.back()[parts[i]];
    if (next.IsDefined() && !next.IsNull() && !next.IsMap())
      throw ConfigError(fmt::format("override '{}': '{}' is not a mapping", assignment, parts[i]));
    if (!next.IsDefined() || next.IsNull()) path.back()[parts[i]] = YAML::Node(YAML::NodeType::Map);
    path.push_back(path.back()[parts[i]]);
  }
  path.back()[parts.back()] = parsed;
}

}  // namespace detail

}  // namespace torchclip
