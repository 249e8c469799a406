#include "sweep_labels.h"

#include <map>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace protoquant::sweep_detail {

namespace {

// Longest rendering of one value inside a member name (file names are limited to 255 bytes).
constexpr size_t kMaxNameValueLength = 40;

// Portable in a file name on Linux, macOS and Windows, and harmless in a shell.
std::string filesystem_safe(const std::string& text) {
  std::string safe;
  for (const char c : text.substr(0, kMaxNameValueLength)) {
    const bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == ',' || c == '+' || c == '-' || c == '_' || c == '=';
    safe += keep ? c : '_';
  }
  return safe;
}

}  // namespace

nlohmann::json json_of(const toml::node& node) {
  if (const toml::table* table = node.as_table()) {
    nlohmann::json object = nlohmann::json::object();
    for (const auto& [key, value] : *table) object[std::string(key.str())] = json_of(value);
    return object;
  }
  if (const toml::array* array = node.as_array()) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& element : *array) list.push_back(json_of(element));
    return list;
  }
  if (auto v = node.value_exact<std::string>()) return *v;
  if (auto v = node.value_exact<int64_t>()) return *v;
  if (auto v = node.value_exact<double>()) return *v;
  if (auto v = node.value_exact<bool>()) return *v;
  std::ostringstream text;  // dates and times
  node.visit([&](const auto& value) { text << value; });
  return text.str();
}

std::string value_text(const toml::node& node) {
  if (const toml::table* table = node.as_table()) {
    std::vector<std::string> entries;
    for (const auto& [key, value] : *table) entries.push_back(fmt::format("{}={}", key.str(), value_text(value)));
    return fmt::format("{}", fmt::join(entries, ","));
  }
  if (const toml::array* array = node.as_array()) {
    std::vector<std::string> elements;
    for (const auto& element : *array) elements.push_back(value_text(element));
    return fmt::format("{}", fmt::join(elements, ","));
  }
  if (auto v = node.value_exact<std::string>()) return *v;
  if (auto v = node.value_exact<int64_t>()) return fmt::format("{}", *v);
  if (auto v = node.value_exact<double>()) return fmt::format("{}", *v);
  if (auto v = node.value_exact<bool>()) return *v ? "true" : "false";
  std::ostringstream text;
  node.visit([&](const auto& value) { text << value; });
  return text.str();
}

std::string member_name(const std::string& experiment_name, const std::vector<Label>& labels) {
  std::string name = experiment_name;
  for (const Label& label : labels) name += fmt::format("-{}={}", label.key, filesystem_safe(label.value));
  return name;
}

std::string member_prefix(size_t index, const std::vector<Label>& labels) {
  std::vector<std::string> parts;
  for (const Label& label : labels) parts.push_back(fmt::format("{}={}", label.key, label.value));
  return fmt::format("member {} ({})", index, fmt::join(parts, ", "));
}

void make_names_unique(std::vector<SweepMember>& members) {
  std::map<std::string, int> uses;
  for (const auto& member : members) ++uses[member.name];
  for (auto& member : members) {
    if (uses[member.name] < 2) continue;
    member.name += fmt::format("-{}", member.index);
    member.spec.experiment.set("name", member.name);
    member.spec.resolved["experiment"]["name"] = member.name;
  }
}

}  // namespace protoquant::sweep_detail
