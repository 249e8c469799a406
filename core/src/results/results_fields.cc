// How a results JSON becomes the results store's rows: its run-level fields checked, manifest
// parameters and metrics flattened to dotted keys, parameter values as the text filters compare,
// and --where's filters.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "protoquant/status.h"
#include "results/results_fields.h"

namespace protoquant {
using nlohmann::json;

namespace {

std::string join_key(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

bool is_structured(const json& value) { return value.is_object() || value.is_array(); }

void flatten_parameters_into(const json& node, const std::string& prefix,
                             std::vector<std::pair<std::string, json>>& out) {
  // An empty table is kept as "{}" when it is not the root: whether a table is there can matter.
  if (node.is_object() && !(node.empty() && !prefix.empty())) {
    for (const auto& [name, value] : node.items()) flatten_parameters_into(value, join_key(prefix, name), out);
    return;
  }
  if (node.is_array() && std::any_of(node.begin(), node.end(), is_structured)) {
    for (size_t i = 0; i < node.size(); ++i) flatten_parameters_into(node[i], join_key(prefix, std::to_string(i)), out);
    return;
  }
  if (!prefix.empty()) out.emplace_back(prefix, node);
}

void flatten_metrics_into(const json& node, const std::string& prefix, std::vector<std::pair<std::string, double>>& out) {
  if (node.is_object()) {
    for (const auto& [name, value] : node.items()) flatten_metrics_into(value, join_key(prefix, name), out);
    return;
  }
  if (!node.is_number() || prefix.empty()) return;  // is_number() is false for booleans
  const double value = node.get<double>();
  if (std::isfinite(value)) out.emplace_back(prefix, value);
}

class FieldReader {
 public:
  FieldReader(const std::string& file, const std::string& run) : file_(file), run_(run) {}

  absl::Status wrong(const std::string& field, const char* expected) const {
    return absl::InvalidArgumentError(fmt::format("{}: results of run '{}': '{}' is not {}", file_, run_, field, expected));
  }
  // A string field, "" when absent.
  absl::StatusOr<std::string> string(const json& object, const char* name, const std::string& where) const {
    const auto found = object.find(name);
    if (found == object.end() || found->is_null()) return std::string();
    if (!found->is_string()) return wrong(join_key(where, name), "a string");
    return found->get<std::string>();
  }
  absl::StatusOr<std::optional<double>> number(const json& object, const char* name, const std::string& where) const {
    const auto found = object.find(name);
    if (found == object.end() || found->is_null()) return std::optional<double>();
    if (!found->is_number()) return wrong(join_key(where, name), "a number");
    return std::optional<double>(found->get<double>());
  }
  // An object field, an empty object when absent.
  absl::StatusOr<json> object(const json& parent, const char* name, bool required) const {
    const auto found = parent.find(name);
    if (found == parent.end()) {
      if (required) return absl::InvalidArgumentError(fmt::format("{}: results of run '{}' have no '{}'", file_, run_, name));
      return json::object();
    }
    if (!found->is_object()) return wrong(name, "an object");
    return *found;
  }

 private:
  const std::string& file_;
  const std::string& run_;
};

}  // namespace

absl::StatusOr<RunFields> read_run_fields(const json& results, const std::string& file) {
  if (!results.is_object()) return absl::InvalidArgumentError(fmt::format("{}: results are not a JSON object", file));
  const auto id = results.find("run_id");
  if (id == results.end() || !id->is_string() || id->get<std::string>().empty()) {
    return absl::InvalidArgumentError(fmt::format("{}: results have no 'run_id' string", file));
  }
  RunFields fields;
  fields.run_id = id->get<std::string>();
  const FieldReader read(file, fields.run_id);
  PQ_ASSIGN_OR_RETURN(fields.finished_at, read.string(results, "finished_at", ""));
  if (fields.finished_at.empty()) return read.wrong("finished_at", "a time (ISO 8601)");
  PQ_ASSIGN_OR_RETURN(fields.experiment, read.string(results, "experiment", ""));
  PQ_ASSIGN_OR_RETURN(fields.manifest_hash, read.string(results, "manifest_hash", ""));
  PQ_ASSIGN_OR_RETURN(fields.run_dir, read.string(results, "run_dir", ""));
  PQ_ASSIGN_OR_RETURN(fields.total_seconds, read.number(results, "total_seconds", ""));
  PQ_ASSIGN_OR_RETURN(const json toolkit, read.object(results, "toolkit", false));
  PQ_ASSIGN_OR_RETURN(fields.toolkit_version, read.string(toolkit, "version", "toolkit"));
  PQ_ASSIGN_OR_RETURN(fields.toolkit_commit, read.string(toolkit, "commit", "toolkit"));
  PQ_ASSIGN_OR_RETURN(const json environment, read.object(results, "environment", false));
  PQ_ASSIGN_OR_RETURN(fields.cpu_model, read.string(environment, "cpu_model", "environment"));
  PQ_ASSIGN_OR_RETURN(fields.manifest, read.object(results, "manifest", true));
  PQ_ASSIGN_OR_RETURN(fields.metrics, read.object(results, "metrics", true));
  PQ_ASSIGN_OR_RETURN(const json stages, read.object(results, "stages", false));
  for (const auto& [name, stage] : stages.items()) {
    const std::string where = join_key("stages", name);
    if (!stage.is_object()) return read.wrong(where, "an object");
    StageRecord record;
    PQ_ASSIGN_OR_RETURN(record.seconds, read.number(stage, "seconds", where));
    PQ_ASSIGN_OR_RETURN(record.key, read.string(stage, "key", where));
    if (const auto reused = stage.find("reused"); reused != stage.end() && !reused->is_null()) {
      if (!reused->is_boolean()) return read.wrong(join_key(where, "reused"), "true or false");
      record.reused = reused->get<bool>();
    }
    fields.stages.emplace_back(name, std::move(record));
  }
  return fields;
}

std::vector<std::pair<std::string, json>> flatten_parameters(const json& manifest) {
  std::vector<std::pair<std::string, json>> out;
  flatten_parameters_into(manifest, "", out);
  return out;
}

std::vector<std::pair<std::string, double>> flatten_metrics(const json& metrics) {
  std::vector<std::pair<std::string, double>> out;
  flatten_metrics_into(metrics, "", out);
  return out;
}

std::string parameter_text(const json& value) {
  switch (value.type()) {
    case json::value_t::string: return value.get<std::string>();
    case json::value_t::boolean: return value.get<bool>() ? "true" : "false";
    case json::value_t::number_integer: return std::to_string(value.get<int64_t>());
    case json::value_t::number_unsigned: return std::to_string(value.get<uint64_t>());
    case json::value_t::number_float: {
      // An integral float prints as the integer, so `codes = 64.0` and `--where codes=64` agree;
      // anything else is the shortest text that reads back as the same double.
      const double number = value.get<double>();
      if (number == 0) return "0";
      if (std::isfinite(number) && number == std::floor(number) && std::fabs(number) < 1e15) {
        return fmt::format("{:.0f}", number);
      }
      return fmt::format("{}", number);
    }
    default: return value.dump();
  }
}

absl::StatusOr<ParamFilter> parse_param_filter(std::string_view text) {
  const size_t equals = text.find('=');
  if (equals == std::string_view::npos || equals == 0) {
    return absl::InvalidArgumentError(fmt::format("--where '{}': expected KEY=VALUE, e.g. quantizer.codes=64", text));
  }
  ParamFilter filter{std::string(text.substr(0, equals)), std::string(text.substr(equals + 1))};
  // The value is read as JSON where it is JSON (numbers, true, [1,5], "quoted"), so it compares
  // as the stored text does; a bare word (vq) is a string as it stands.
  const json parsed = json::parse(filter.value, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_discarded()) filter.value = parameter_text(parsed);
  return filter;
}

}  // namespace protoquant
