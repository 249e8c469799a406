#include "protoquant/manifest.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <toml++/toml.h>

#include "core_schemas.h"
#include "manifest_document.h"
#include "protoquant/folder_name.h"
#include "protoquant/plugin_loader.h"

namespace protoquant {
namespace fs = std::filesystem;

namespace manifest_detail {

std::string where(const fs::path& file, const toml::source_region& region) {
  // Nodes carry the file they were parsed from: a base manifest, or "--set key=value".
  const std::string source = region.path ? std::string(*region.path) : file.string();
  if (region.begin.line == 0) return source;
  return fmt::format("{}:{}:{}", source, region.begin.line, region.begin.column);
}

const std::string* ManifestReader::text_of(const fs::path& file) {
  std::error_code ec;
  const fs::path canonical = fs::weakly_canonical(file, ec);
  if (auto cached = texts_.find(canonical); cached != texts_.end()) return &cached->second;
  if (!fs::is_regular_file(canonical)) return nullptr;
  std::ifstream in(canonical, std::ios::binary);
  if (!in) return nullptr;
  std::ostringstream text;
  text << in.rdbuf();
  return &texts_.emplace(canonical, text.str()).first->second;
}

absl::StatusOr<toml::table> ManifestReader::read(const fs::path& manifest) {
  if (text_of(manifest) == nullptr) {
    return absl::NotFoundError(fmt::format("{}: manifest not found", manifest.string()));
  }
  chain_.clear();
  std::vector<Visit> visiting;
  return read_with_bases(manifest, visiting);
}

absl::StatusOr<toml::table> ManifestReader::read_with_bases(const fs::path& file, std::vector<Visit>& visiting) {
  const std::string* text = text_of(file);  // the caller checked that it opens
  toml::table root;
  try {
    // The same source path parse_file() would give: errors name the file as the user wrote it.
    root = toml::parse(*text, file.string());
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(fmt::format("{}: {}", where(file, e.source()), e.description()));
  }
  std::error_code ec;
  visiting.push_back({fs::weakly_canonical(file, ec), file.string()});

  const toml::node* extends = root.get("extends");
  if (extends == nullptr) {
    chain_.push_back(file.string());
    return root;
  }
  const auto base_name = extends->value_exact<std::string>();
  if (!base_name || base_name->empty()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: extends must be the path of a base manifest, e.g. extends = \"base.toml\"",
                    where(file, extends->source())));
  }
  // Relative to the folder of the file that names it, like every other path in a manifest.
  const fs::path base = fs::path(*base_name).is_absolute() ? fs::path(*base_name)
                                                          : (file.parent_path() / *base_name).lexically_normal();
  const fs::path base_canonical = fs::weakly_canonical(base, ec);
  auto seen = std::find_if(visiting.begin(), visiting.end(),
                           [&](const Visit& visit) { return visit.canonical == base_canonical; });
  if (seen != visiting.end()) {
    std::vector<std::string> cycle;
    for (auto it = seen; it != visiting.end(); ++it) cycle.push_back(it->shown);
    cycle.push_back(base.string());
    return absl::InvalidArgumentError(
        fmt::format("{}: extends: cycle: {}", where(file, extends->source()), fmt::join(cycle, " -> ")));
  }
  if (text_of(base) == nullptr) {
    return absl::NotFoundError(fmt::format("{}: extends: {}: cannot open", where(file, extends->source()), *base_name));
  }
  PQ_ASSIGN_OR_RETURN(toml::table merged, read_with_bases(base, visiting));
  chain_.push_back(file.string());
  root.erase("extends");
  merge(merged, root);
  return merged;
}

void merge(toml::table& target, toml::table& source) {
  for (auto&& [key, node] : source) {
    if (toml::table* sub = node.as_table(); sub != nullptr) {
      if (toml::table* existing = target.get_as<toml::table>(key.str())) {
        merge(*existing, *sub);
        continue;
      }
    }
    // Erased first because assigning to an existing entry keeps the old key, and errors about the
    // key (an unknown name) must point where the winning value was written.
    target.erase(key.str());
    target.insert(key, std::move(node));
  }
}

absl::StatusOr<toml::table> parse_override(const std::string& assignment) {
  const std::string source = "--set " + assignment;
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    return absl::InvalidArgumentError(fmt::format("{}: expected dotted.key=value", source));
  }
  const std::string key = assignment.substr(0, eq);
  const std::string value = assignment.substr(eq + 1);
  try {
    return toml::parse(key + " = " + value, std::string_view(source));
  } catch (const toml::parse_error&) {
    // Not TOML (a bare path such as /data/fmnist): take the text as a string.
    try {
      std::ostringstream quoted;
      quoted << toml::value<std::string>(value);
      return toml::parse(key + " = " + quoted.str(), std::string_view(source));
    } catch (const toml::parse_error& e) {
      return absl::InvalidArgumentError(fmt::format("{}: {}", source, e.description()));
    }
  }
}

absl::Status apply_overrides(toml::table& root, const std::vector<std::string>& overrides) {
  for (const auto& assignment : overrides) {
    PQ_ASSIGN_OR_RETURN(toml::table parsed, parse_override(assignment));
    merge(root, parsed);
  }
  return absl::OkStatus();
}

}  // namespace manifest_detail

namespace {

using manifest_detail::where;

const std::vector<std::string> kTopLevelKeys = {"experiment", "dataset", "backbone", "quantizer", "head",
                                                "stages",     "metrics", "report",   "plugins"};

class Validator {
 public:
  Validator(fs::path file, Registry& registry) : file_(std::move(file)), registry_(registry) {}

  void error(const toml::source_region& region, const std::string& message) {
    errors_.push_back(fmt::format("{}: {}", where(file_, region), message));
  }
  void error_at_file(const std::string& message) { errors_.push_back(fmt::format("{}: {}", file_.string(), message)); }
  std::vector<std::string>& errors() { return errors_; }

  // Converts a TOML value to the spec's type; records an error and returns nullopt otherwise.
  std::optional<ParamValue> convert(const ParamSpec& spec, const toml::node& node, const std::string& qualified,
                                    const fs::path& relative_to) {
    auto mismatch = [&]() -> std::optional<ParamValue> {
      error(node.source(), fmt::format("{} must be {}", qualified, to_string(spec.type)));
      return std::nullopt;
    };
    switch (spec.type) {
      case ParamType::kBool:
        if (auto v = node.value_exact<bool>()) return ParamValue(*v);
        return mismatch();
      case ParamType::kInt:
        if (node.is_integer()) return ParamValue(static_cast<int64_t>(*node.value<int64_t>()));
        return mismatch();
      case ParamType::kFloat:
        if (node.is_number()) return ParamValue(*node.value<double>());
        return mismatch();
      case ParamType::kString:
        if (auto v = node.value_exact<std::string>()) {
          std::string s = *v;
          if (spec.is_path && !s.empty()) s = resolve_path(s, relative_to);
          return ParamValue(s);
        }
        return mismatch();
      case ParamType::kIntList:
      case ParamType::kFloatList:
      case ParamType::kStringList: {
        const toml::array* array = node.as_array();
        if (array == nullptr) return mismatch();
        std::vector<int64_t> ints;
        std::vector<double> floats;
        std::vector<std::string> strings;
        for (const auto& element : *array) {
          const bool ok = (spec.type == ParamType::kIntList && element.is_integer()) ||
                          (spec.type == ParamType::kFloatList && element.is_number()) ||
                          (spec.type == ParamType::kStringList && element.is_string());
          if (!ok) {
            error(element.source(), fmt::format("{} must be {}", qualified, to_string(spec.type)));
            return std::nullopt;
          }
          if (spec.type == ParamType::kIntList) ints.push_back(*element.value<int64_t>());
          if (spec.type == ParamType::kFloatList) floats.push_back(*element.value<double>());
          if (spec.type == ParamType::kStringList) strings.push_back(*element.value<std::string>());
        }
        if (spec.type == ParamType::kIntList) return ParamValue(ints);
        if (spec.type == ParamType::kFloatList) return ParamValue(floats);
        return ParamValue(strings);
      }
    }
    return mismatch();
  }

  // Checks one table against a schema. `skip` names keys handled by the caller (e.g. "type").
  Params validate_table(const toml::table& table, const ParamSchema& schema, const std::string& table_name,
                        const std::set<std::string>& skip = {}) {
    Params params = Params::defaults(schema);
    for (const auto& [key, node] : table) {
      const std::string name(key.str());
      if (skip.count(name)) continue;
      const std::string qualified = table_name + "." + name;
      const ParamSpec* spec = schema.find(name);
      if (spec == nullptr) {
        const std::string hint = closest_match(name, schema.names());
        error(key.source(), fmt::format("unknown key '{}' in [{}]{}", name, table_name,
                                        hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint)));
        continue;
      }
      auto value = convert(*spec, node, qualified, base_dir_for(node));
      if (!value) continue;
      if (std::string problem = spec->check(*value); !problem.empty()) {
        error(node.source(), fmt::format("{}.{}", table_name, problem));
        continue;
      }
      params.set(name, *value);
    }
    for (const auto& spec : schema.specs()) {
      if (spec.required && !params.has(spec.name)) {
        error(table.source(), fmt::format("[{}] needs '{}' ({}: {})", table_name, spec.name, to_string(spec.type), spec.doc));
      }
    }
    return params;
  }

  // A component table: `type` picks the plugin, the other keys are its parameters.
  std::optional<ComponentSpec> validate_component(const toml::table& table, const std::string& kind,
                                                  const std::string& table_name) {
    const toml::node* type_node = table.get("type");
    const auto known = registry_.names(kind);
    if (type_node == nullptr || !type_node->is_string()) {
      error(type_node ? type_node->source() : table.source(),
            fmt::format("[{}] needs type = \"...\", one of: {}", table_name, fmt::join(known, ", ")));
      return std::nullopt;
    }
    const std::string type = *type_node->value<std::string>();
    const ParamSchema* schema = registry_.schema(kind, type);
    if (schema == nullptr) {
      const std::string hint = closest_match(type, known);
      error(type_node->source(),
            fmt::format("unknown {} type '{}'{}; known: {}", kind, type,
                        hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint), fmt::join(known, ", ")));
      return std::nullopt;
    }
    return ComponentSpec{kind, type, validate_table(table, *schema, table_name, {"type"})};
  }

  // The folder a relative path resolves against: that of the file which set it (a base
  // manifest's folder for a value inherited through `extends`), or the working directory for a
  // value given with --set.
  // Always absolute: a manifest named bare ("m.toml") has an empty parent path.
  fs::path base_dir_for(const toml::node& node) const {
    const auto& source = node.source().path;
    if (!source) return fs::absolute(file_).parent_path();
    if (source->rfind("--set", 0) == 0) return fs::current_path();
    return fs::absolute(fs::path(*source)).parent_path();
  }

 private:
  static std::string resolve_path(const std::string& value, const fs::path& relative_to) {
    fs::path p(value);
    if (p.is_absolute()) return value;
    return (relative_to / p).lexically_normal().string();
  }

  fs::path file_;
  Registry& registry_;
  std::vector<std::string> errors_;
};

// A top-level name that is not a table of a single run: a hint for the two that belong to the
// manifest machinery, did-you-mean for the rest.
std::string unknown_top_level_message(const std::string& name) {
  if (name == "sweep") {
    return "[sweep] makes this manifest a sweep of several runs; load it as a sweep (load_sweep), "
           "not as a single experiment";
  }
  if (name == "extends") return "extends can only be given in a manifest file, not with --set";
  const std::string hint = closest_match(name, kTopLevelKeys);
  return fmt::format("unknown table '{}'{}", name, hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint));
}

}  // namespace

namespace manifest_detail {

ManifestValidation validate_manifest(const fs::path& manifest, const toml::table& root, Registry& registry) {
  ManifestValidation result;
  ExperimentSpec& spec = result.spec;
  spec.manifest_path = fs::absolute(manifest);
  spec.base_dir = spec.manifest_path.parent_path();
  Validator v(manifest, registry);

  // Plugins first: the components they register must be known before the tables are checked.
  if (const toml::node* plugins = root.get("plugins")) {
    const toml::array* list = plugins->as_array();
    if (list == nullptr) v.error(plugins->source(), "plugins must be a list of library paths");
    for (size_t i = 0; list && i < list->size(); ++i) {
      const toml::node& entry = *list->get(i);
      auto path = entry.value<std::string>();
      if (!path) {
        v.error(entry.source(), "plugins must be a list of library paths");
        continue;
      }
      fs::path library(*path);
      if (library.is_relative()) library = v.base_dir_for(entry) / library;
      if (absl::Status status = load_plugin(library, registry); !status.ok()) {
        v.error(entry.source(), std::string(status.message()));
        continue;
      }
      spec.plugins.push_back(fs::absolute(library).lexically_normal().string());
    }
  }

  for (const auto& [key, node] : root) {
    const std::string name(key.str());
    if (std::find(kTopLevelKeys.begin(), kTopLevelKeys.end(), name) == kTopLevelKeys.end()) {
      v.error(key.source(), unknown_top_level_message(name));
    }
  }

  auto table_of = [&](const std::string& name, bool required) -> const toml::table* {
    const toml::node* node = root.get(name);
    if (node == nullptr) {
      if (required) v.error_at_file(fmt::format("missing [{}] table", name));
      return nullptr;
    }
    if (!node->is_table()) {
      v.error(node->source(), fmt::format("{} must be a table", name));
      return nullptr;
    }
    return node->as_table();
  };

  static const toml::table kEmpty;
  const toml::table* experiment = table_of("experiment", false);
  spec.experiment = v.validate_table(experiment ? *experiment : kEmpty, experiment_schema(), "experiment");
  if (spec.experiment.get_string("name").empty()) spec.experiment.set("name", manifest.stem().string());
  // The name becomes the run's folder under the output: it must stay there.
  if (absl::Status named = check_folder_name(spec.experiment.get_string("name"), "experiment.name"); !named.ok()) {
    const toml::node* name_node = experiment ? experiment->get("name") : nullptr;
    if (name_node != nullptr) v.error(name_node->source(), std::string(named.message()));
    else v.error_at_file(std::string(named.message()));
  }

  struct Slot { const char* kind; ComponentSpec* out; };
  // [quantizer] is optional: a head with free prototypes (free_prototypes) has no codebook.
  for (Slot slot : {Slot{"dataset", &spec.dataset}, Slot{"backbone", &spec.backbone},
                    Slot{"quantizer", &spec.quantizer}, Slot{"head", &spec.head}}) {
    if (const toml::table* table = table_of(slot.kind, std::string(slot.kind) != "quantizer")) {
      if (auto component = v.validate_component(*table, slot.kind, slot.kind)) *slot.out = std::move(*component);
    }
  }

  const toml::table* stages = table_of("stages", false);
  if (stages) {
    for (const auto& [key, node] : *stages) {
      const std::string name(key.str());
      const auto& names = stage_names();
      if (std::find(names.begin(), names.end(), name) == names.end()) {
        const std::string hint = closest_match(name, names);
        v.error(key.source(), fmt::format("unknown stage '{}' in [stages]{}; stages: {}", name,
                                          hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint),
                                          fmt::join(names, ", ")));
      } else if (!node.is_table()) {
        v.error(node.source(), fmt::format("stages.{} must be a table", name));
      }
    }
  }
  for (const auto& stage : stage_names()) {
    const toml::table* table = stages ? stages->get_as<toml::table>(stage) : nullptr;
    spec.stages[stage] = v.validate_table(table ? *table : kEmpty, stage_schema(stage), "stages." + stage);
  }

  if (const toml::node* metrics = root.get("metrics")) {
    const toml::array* list = metrics->as_array();
    if (list == nullptr || !list->is_array_of_tables()) {
      v.error(metrics->source(), "metrics must be an array of tables: [[metrics]] type = \"accuracy\"");
    } else {
      for (size_t i = 0; i < list->size(); ++i) {
        const toml::table& table = *list->get(i)->as_table();
        if (auto component = v.validate_component(table, "metric", fmt::format("metrics[{}]", i))) {
          spec.metrics.push_back(std::move(*component));
        }
      }
    }
  } else if (registry.metrics.find("accuracy") != nullptr) {
    spec.metrics.push_back({"metric", "accuracy", Params::defaults(registry.metrics.find("accuracy")->schema)});
  }

  const toml::table* report = table_of("report", false);
  spec.report = v.validate_table(report ? *report : kEmpty, report_schema(), "report");

  if (!v.errors().empty()) {
    result.errors = std::move(v.errors());
    return result;
  }

  auto component_json = [](const ComponentSpec& c) {
    nlohmann::json j = c.params.to_json();
    j["type"] = c.type;
    return j;
  };
  nlohmann::json& r = spec.resolved;
  r["experiment"] = spec.experiment.to_json();
  r["dataset"] = component_json(spec.dataset);
  r["backbone"] = component_json(spec.backbone);
  if (!spec.quantizer.type.empty()) r["quantizer"] = component_json(spec.quantizer);
  r["head"] = component_json(spec.head);
  for (const auto& [stage, params] : spec.stages) r["stages"][stage] = params.to_json();
  r["metrics"] = nlohmann::json::array();
  for (const auto& metric : spec.metrics) r["metrics"].push_back(component_json(metric));
  r["report"] = spec.report.to_json();
  r["plugins"] = spec.plugins;
  return result;
}

}  // namespace manifest_detail

absl::StatusOr<ExperimentSpec> load_experiment(const fs::path& manifest, const std::vector<std::string>& overrides,
                                               Registry& registry) {
  manifest_detail::ManifestReader reader;
  PQ_ASSIGN_OR_RETURN(toml::table root, reader.read(manifest));
  PQ_RETURN_IF_ERROR(manifest_detail::apply_overrides(root, overrides));
  manifest_detail::ManifestValidation validation = manifest_detail::validate_manifest(manifest, root, registry);
  if (!validation.errors.empty()) {
    return absl::InvalidArgumentError(fmt::format("{}", fmt::join(validation.errors, "\n")));
  }
  return std::move(validation.spec);
}

namespace {

toml::array toml_array(const nlohmann::json& list);

toml::table toml_table(const nlohmann::json& object) {
  toml::table table;
  for (const auto& [key, value] : object.items()) {
    if (value.is_object()) table.insert(key, toml_table(value));
    else if (value.is_array()) table.insert(key, toml_array(value));
    else if (value.is_boolean()) table.insert(key, value.get<bool>());
    else if (value.is_number_integer()) table.insert(key, value.get<int64_t>());
    else if (value.is_number()) table.insert(key, value.get<double>());
    else if (value.is_string()) table.insert(key, value.get<std::string>());
  }
  return table;
}

toml::array toml_array(const nlohmann::json& list) {
  toml::array array;
  for (const auto& value : list) {
    if (value.is_object()) array.push_back(toml_table(value));
    else if (value.is_boolean()) array.push_back(value.get<bool>());
    else if (value.is_number_integer()) array.push_back(value.get<int64_t>());
    else if (value.is_number()) array.push_back(value.get<double>());
    else if (value.is_string()) array.push_back(value.get<std::string>());
  }
  return array;
}

}  // namespace

std::string resolved_manifest_toml(const nlohmann::json& resolved) {
  std::ostringstream out;
  out << "# The resolved manifest of this run: every default filled in, every path absolute.\n"
      << toml_table(resolved) << "\n";
  return out.str();
}

}  // namespace protoquant
