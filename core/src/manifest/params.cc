#include "protoquant/params.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

namespace protoquant {

const char* to_string(ParamType type) {
  switch (type) {
    case ParamType::kBool: return "bool";
    case ParamType::kInt: return "int";
    case ParamType::kFloat: return "float";
    case ParamType::kString: return "string";
    case ParamType::kIntList: return "list of int";
    case ParamType::kFloatList: return "list of float";
    case ParamType::kStringList: return "list of string";
  }
  return "?";
}

namespace {

struct Formatter {
  std::string operator()(bool v) const { return v ? "true" : "false"; }
  std::string operator()(int64_t v) const { return fmt::format("{}", v); }
  std::string operator()(double v) const { return fmt::format("{}", v); }
  std::string operator()(const std::string& v) const { return fmt::format("\"{}\"", v); }
  std::string operator()(const std::vector<int64_t>& v) const { return fmt::format("[{}]", fmt::join(v, ", ")); }
  std::string operator()(const std::vector<double>& v) const { return fmt::format("[{}]", fmt::join(v, ", ")); }
  std::string operator()(const std::vector<std::string>& v) const {
    std::vector<std::string> quoted;
    for (const auto& s : v) quoted.push_back(fmt::format("\"{}\"", s));
    return fmt::format("[{}]", fmt::join(quoted, ", "));
  }
};

bool type_matches(ParamType type, const ParamValue& value) {
  switch (type) {
    case ParamType::kBool: return std::holds_alternative<bool>(value);
    case ParamType::kInt: return std::holds_alternative<int64_t>(value);
    case ParamType::kFloat: return std::holds_alternative<double>(value);
    case ParamType::kString: return std::holds_alternative<std::string>(value);
    case ParamType::kIntList: return std::holds_alternative<std::vector<int64_t>>(value);
    case ParamType::kFloatList: return std::holds_alternative<std::vector<double>>(value);
    case ParamType::kStringList: return std::holds_alternative<std::vector<std::string>>(value);
  }
  return false;
}

std::string check_number(const ParamSpec& spec, double v) {
  if (!std::isfinite(v)) return fmt::format("{} must be a finite number", spec.name);
  if (spec.minimum && v < *spec.minimum) return fmt::format("{} = {} is below the minimum {}", spec.name, v, *spec.minimum);
  if (spec.maximum && v > *spec.maximum) return fmt::format("{} = {} is above the maximum {}", spec.name, v, *spec.maximum);
  return {};
}

std::string check_choice(const ParamSpec& spec, const std::string& v) {
  if (spec.choices.empty() || std::find(spec.choices.begin(), spec.choices.end(), v) != spec.choices.end()) return {};
  const std::string hint = closest_match(v, spec.choices);
  return fmt::format("{} = \"{}\" is not one of {}{}", spec.name, v, Formatter{}(spec.choices),
                     hint.empty() ? "" : fmt::format(" (did you mean \"{}\"?)", hint));
}

}  // namespace

std::string format_value(const ParamValue& value) { return std::visit(Formatter{}, value); }

nlohmann::json to_json(const ParamValue& value) {
  return std::visit([](const auto& v) { return nlohmann::json(v); }, value);
}

ParamSpec ParamSpec::Bool(std::string name, bool value, std::string doc) {
  return {std::move(name), ParamType::kBool, value, false, {}, {}, {}, std::move(doc), false};
}
ParamSpec ParamSpec::Int(std::string name, int64_t value, std::string doc) {
  return {std::move(name), ParamType::kInt, value, false, {}, {}, {}, std::move(doc), false};
}
ParamSpec ParamSpec::Float(std::string name, double value, std::string doc) {
  return {std::move(name), ParamType::kFloat, value, false, {}, {}, {}, std::move(doc), false};
}
ParamSpec ParamSpec::String(std::string name, std::string value, std::string doc) {
  return {std::move(name), ParamType::kString, std::move(value), false, {}, {}, {}, std::move(doc), false};
}
ParamSpec ParamSpec::IntList(std::string name, std::vector<int64_t> value, std::string doc) {
  return {std::move(name), ParamType::kIntList, std::move(value), false, {}, {}, {}, std::move(doc), false};
}
ParamSpec ParamSpec::FloatList(std::string name, std::vector<double> value, std::string doc) {
  return {std::move(name), ParamType::kFloatList, std::move(value), false, {}, {}, {}, std::move(doc), false};
}
ParamSpec ParamSpec::StringList(std::string name, std::vector<std::string> value, std::string doc) {
  return {std::move(name), ParamType::kStringList, std::move(value), false, {}, {}, {}, std::move(doc), false};
}
ParamSpec ParamSpec::Required(std::string name, ParamType type, std::string doc) {
  ParamSpec spec{std::move(name), type, {}, true, {}, {}, {}, std::move(doc), false};
  return spec;
}

std::string ParamSpec::check(const ParamValue& value) const {
  if (!type_matches(type, value)) {
    return fmt::format("{} must be {}, got {}", name, to_string(type), format_value(value));
  }
  if (const auto* v = std::get_if<int64_t>(&value)) return check_number(*this, static_cast<double>(*v));
  if (const auto* v = std::get_if<double>(&value)) return check_number(*this, *v);
  if (const auto* v = std::get_if<std::string>(&value)) return check_choice(*this, *v);
  if (const auto* v = std::get_if<std::vector<int64_t>>(&value)) {
    for (auto x : *v) if (auto e = check_number(*this, static_cast<double>(x)); !e.empty()) return e;
  }
  if (const auto* v = std::get_if<std::vector<double>>(&value)) {
    for (auto x : *v) if (auto e = check_number(*this, x); !e.empty()) return e;
  }
  if (const auto* v = std::get_if<std::vector<std::string>>(&value)) {
    for (const auto& x : *v) if (auto e = check_choice(*this, x); !e.empty()) return e;
  }
  return {};
}

ParamSchema& ParamSchema::add(ParamSpec spec) {
  if (find(spec.name) != nullptr) throw std::logic_error("duplicate parameter " + spec.name);
  specs_.push_back(std::move(spec));
  return *this;
}

ParamSchema& ParamSchema::extend(const ParamSchema& other) {
  for (const auto& spec : other.specs()) add(spec);
  return *this;
}

ParamSchema& ParamSchema::with_default(const std::string& name, ParamValue value) {
  for (auto& spec : specs_) {
    if (spec.name == name) {
      spec.default_value = std::move(value);
      return *this;
    }
  }
  throw std::logic_error("no parameter " + name);
}

const ParamSpec* ParamSchema::find(const std::string& name) const {
  for (const auto& spec : specs_) if (spec.name == name) return &spec;
  return nullptr;
}

std::vector<std::string> ParamSchema::names() const {
  std::vector<std::string> out;
  for (const auto& spec : specs_) out.push_back(spec.name);
  return out;
}

Params Params::defaults(const ParamSchema& schema) {
  Params params;
  for (const auto& spec : schema.specs()) if (!spec.required) params.set(spec.name, spec.default_value);
  return params;
}

const ParamValue& Params::at(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) throw std::out_of_range("parameter '" + name + "' is not set");
  return it->second;
}

template <class T>
static const T& get_as(const ParamValue& v, const std::string& name) {
  if (const T* p = std::get_if<T>(&v)) return *p;
  throw std::invalid_argument("parameter '" + name + "' has another type");
}

bool Params::get_bool(const std::string& name) const { return get_as<bool>(at(name), name); }
int64_t Params::get_int(const std::string& name) const { return get_as<int64_t>(at(name), name); }
double Params::get_float(const std::string& name) const {
  const ParamValue& v = at(name);
  if (const auto* i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
  return get_as<double>(v, name);
}
const std::string& Params::get_string(const std::string& name) const { return get_as<std::string>(at(name), name); }
std::vector<int64_t> Params::get_int_list(const std::string& name) const {
  return get_as<std::vector<int64_t>>(at(name), name);
}
std::vector<double> Params::get_float_list(const std::string& name) const {
  const ParamValue& v = at(name);
  if (const auto* i = std::get_if<std::vector<int64_t>>(&v)) return {i->begin(), i->end()};
  return get_as<std::vector<double>>(v, name);
}
std::vector<std::string> Params::get_string_list(const std::string& name) const {
  return get_as<std::vector<std::string>>(at(name), name);
}

nlohmann::json Params::to_json() const {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [name, value] : values_) out[name] = protoquant::to_json(value);
  return out;
}

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  // Levenshtein distance; suggest only when the typo is small relative to the word.
  auto distance = [](const std::string& a, const std::string& b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
      size_t diagonal = row[0];
      row[0] = i;
      for (size_t j = 1; j <= b.size(); ++j) {
        const size_t up = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
        diagonal = up;
      }
    }
    return row[b.size()];
  };
  std::string best;
  size_t best_distance = std::max<size_t>(2, word.size() / 3) + 1;
  for (const auto& candidate : candidates) {
    const size_t d = distance(word, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = candidate;
    }
  }
  return best;
}

}  // namespace protoquant
