// Typed parameter schemas. Every component declares what it accepts (name, type, default,
// range or choices, one line of doc); manifests are validated against the schema before any work
// starts, and components read their settings from a Params object that holds every key of the
// schema (defaults filled in), so a component never sees an unknown or mistyped value.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace protoquant {

enum class ParamType { kBool, kInt, kFloat, kString, kIntList, kFloatList, kStringList };

using ParamValue = std::variant<bool, int64_t, double, std::string, std::vector<int64_t>,
                                std::vector<double>, std::vector<std::string>>;

const char* to_string(ParamType type);
std::string format_value(const ParamValue& value);
nlohmann::json to_json(const ParamValue& value);

// One parameter. Built fluently: ParamSpec::Int("codes", 256, "number of codewords").min(1)
struct ParamSpec {
  std::string name;
  ParamType type = ParamType::kInt;
  ParamValue default_value;
  bool required = false;  // no default: the manifest must set it
  std::optional<double> minimum, maximum;  // inclusive, for numbers and each list element
  std::vector<std::string> choices;        // for strings and string lists
  std::string doc;
  bool is_path = false;  // a file or folder: relative values resolve against the manifest's folder

  static ParamSpec Bool(std::string name, bool value, std::string doc);
  static ParamSpec Int(std::string name, int64_t value, std::string doc);
  static ParamSpec Float(std::string name, double value, std::string doc);
  static ParamSpec String(std::string name, std::string value, std::string doc);
  static ParamSpec IntList(std::string name, std::vector<int64_t> value, std::string doc);
  static ParamSpec FloatList(std::string name, std::vector<double> value, std::string doc);
  static ParamSpec StringList(std::string name, std::vector<std::string> value, std::string doc);
  // A parameter with no default that every manifest must set.
  static ParamSpec Required(std::string name, ParamType type, std::string doc);

  ParamSpec& min(double value) { minimum = value; return *this; }
  ParamSpec& max(double value) { maximum = value; return *this; }
  ParamSpec& range(double lo, double hi) { minimum = lo; maximum = hi; return *this; }
  ParamSpec& one_of(std::vector<std::string> values) { choices = std::move(values); return *this; }
  ParamSpec& path() { is_path = true; return *this; }

  // Empty when `value` satisfies type, range and choices; otherwise why not.
  std::string check(const ParamValue& value) const;
};

class ParamSchema {
 public:
  ParamSchema() = default;
  ParamSchema(std::initializer_list<ParamSpec> specs) : specs_(specs) {}

  ParamSchema& add(ParamSpec spec);
  // Appends every parameter of `other` (used to extend the shared trainer schema).
  ParamSchema& extend(const ParamSchema& other);
  // Replaces the default of an existing parameter (a stage reusing the trainer schema).
  ParamSchema& with_default(const std::string& name, ParamValue value);

  const ParamSpec* find(const std::string& name) const;
  const std::vector<ParamSpec>& specs() const { return specs_; }
  std::vector<std::string> names() const;

 private:
  std::vector<ParamSpec> specs_;
};

// Resolved values of one component (every schema key present).
class Params {
 public:
  Params() = default;
  // Every default of the schema (the required ones left unset).
  static Params defaults(const ParamSchema& schema);

  void set(const std::string& name, ParamValue value) { values_[name] = std::move(value); }
  bool has(const std::string& name) const { return values_.count(name) > 0; }

  bool get_bool(const std::string& name) const;
  int64_t get_int(const std::string& name) const;
  double get_float(const std::string& name) const;  // ints are widened
  const std::string& get_string(const std::string& name) const;
  std::vector<int64_t> get_int_list(const std::string& name) const;
  std::vector<double> get_float_list(const std::string& name) const;
  std::vector<std::string> get_string_list(const std::string& name) const;

  const std::map<std::string, ParamValue>& values() const { return values_; }
  nlohmann::json to_json() const;

 private:
  const ParamValue& at(const std::string& name) const;
  std::map<std::string, ParamValue> values_;
};

// Closest candidate within a small edit distance, for "did you mean" hints; empty if none.
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace protoquant
