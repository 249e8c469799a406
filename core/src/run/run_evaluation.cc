#include "protoquant/run_evaluation.h"

#include <algorithm>

#include <fmt/format.h>

#include "protoquant/atomic_file.h"
#include "protoquant/experiment_run.h"
#include "protoquant/results_store.h"
#include "protoquant/runner.h"
#include "protoquant/process_group.h"
#include "protoquant/status.h"
#include "protoquant/sweep.h"

namespace protoquant {
namespace fs = std::filesystem;

namespace {

absl::StatusOr<ParamValue> parse_value(const ParamSpec& spec, const std::string& text) {
  try {
    size_t used = 0;
    switch (spec.type) {
      case ParamType::kBool:
        if (text == "true") return ParamValue(true);
        if (text == "false") return ParamValue(false);
        break;
      case ParamType::kInt: {
        const int64_t v = std::stoll(text, &used);
        if (used == text.size()) return ParamValue(v);
        break;
      }
      case ParamType::kFloat: {
        const double v = std::stod(text, &used);
        if (used == text.size()) return ParamValue(v);
        break;
      }
      case ParamType::kString:
        return ParamValue(text);
      default:
        return absl::InvalidArgumentError(fmt::format("{} is a list: set it in the manifest", spec.name));
    }
  } catch (const std::exception&) {
  }
  static const char* kTypes[] = {"a bool", "an int", "a number", "a string"};
  return absl::InvalidArgumentError(
      fmt::format("{} = '{}' is not {}", spec.name, text, kTypes[std::min<int>(static_cast<int>(spec.type), 3)]));
}

}  // namespace

absl::StatusOr<ComponentSpec> parse_metric_option(const std::string& text, const Registry& registry) {
  const size_t colon = text.find(':');
  const std::string name = text.substr(0, colon);
  const auto* entry = registry.metrics.find(name);
  auto fail = [&](const std::string& why) { return absl::InvalidArgumentError(fmt::format("--metric {}: {}", text, why)); };
  if (entry == nullptr) {
    const std::string hint = closest_match(name, registry.metrics.names());
    return fail(fmt::format("no metric '{}'{}", name, hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint)));
  }
  ComponentSpec metric{"metric", name, Params::defaults(entry->schema)};
  if (colon == std::string::npos) return metric;
  std::string rest = text.substr(colon + 1);
  size_t start = 0;
  while (start <= rest.size()) {
    const size_t comma = rest.find(',', start);
    const std::string item = rest.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0) return fail(fmt::format("'{}' is not key=value", item));
    const std::string key = item.substr(0, eq);
    const ParamSpec* spec = entry->schema.find(key);
    if (spec == nullptr) {
      const std::string hint = closest_match(key, entry->schema.names());
      return fail(fmt::format("metric '{}' has no parameter '{}'{}", name, key,
                              hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint)));
    }
    auto value = parse_value(*spec, item.substr(eq + 1));
    if (!value.ok()) return fail(std::string(value.status().message()));
    if (const std::string why = spec->check(*value); !why.empty()) return fail(fmt::format("{}: {}", key, why));
    metric.params.set(key, *value);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return metric;
}

absl::StatusOr<nlohmann::json> evaluate_run(const fs::path& run_dir, const EvaluateOptions& options, Registry& registry) {
  const fs::path results_file = run_dir / "results.json";
  auto recorded = read_json_file(results_file);
  if (!recorded.ok()) {
    return absl::FailedPreconditionError(
        fmt::format("{}: not a finished run (no readable results.json; run it with protoquant run)", run_dir.string()));
  }
  std::vector<std::string> overrides;
  if (!options.split.empty()) overrides.push_back("experiment.eval_split=" + options.split);
  PQ_ASSIGN_OR_RETURN(std::vector<SweepMember> members, load_sweep(run_dir / "manifest.toml", overrides, registry));
  ExperimentSpec spec = members.front().spec;
  for (const auto& text : options.metrics) {
    PQ_ASSIGN_OR_RETURN(ComponentSpec metric, parse_metric_option(text, registry));
    // A metric the run already has, with the same parameters, is that instance (reused).
    const bool present = std::any_of(spec.metrics.begin(), spec.metrics.end(), [&](const ComponentSpec& m) {
      return m.type == metric.type && m.params.to_json() == metric.params.to_json();
    });
    if (present) continue;
    nlohmann::json entry = metric.params.to_json();
    entry["type"] = metric.type;
    spec.resolved["metrics"].push_back(entry);
    spec.metrics.push_back(std::move(metric));
  }
  RunSettings settings;
  settings.store = !options.store.empty() ? options.store : fs::path(recorded->value("store", std::string()));
  {
    // Everything up to the head must be filed: evaluating never trains.
    ExperimentRun probe(spec, registry, run_dir, RunMode::kRun, settings);
    PQ_ASSIGN_OR_RETURN(const std::vector<StagePlan> plan, probe.plan());
    for (const auto& stage : plan) {
      if (!stage.reused && stage.trains) {
        return absl::FailedPreconditionError(
            fmt::format("{}: stage '{}' (key {}) is not in the store {}; evaluate trains nothing (run the "
                        "manifest again with protoquant run, or name the store with --store)",
                        run_dir.string(), stage.stage, stage.key.substr(0, 12), probe.store().root().string()));
      }
    }
  }
  // The output locations are checked before the pass, which rewrites results.json and the report.
  const fs::path db = options.db.empty() ? fs::absolute(run_dir).parent_path() / kResultsStoreFile : options.db;
  PQ_RETURN_IF_ERROR(ResultsStore::check_writable(db));
  if (is_writer()) PQ_RETURN_IF_ERROR(ResultsStore::open(db).status());  // a foreign file, a newer schema
  if (!options.dump.empty() && collectives().world_size() > 1) {
    // The dump holds every image's inputs, which a sharded pass leaves spread over the ranks.
    return absl::InvalidArgumentError("--dump runs in one process: drop the data-parallel launch");
  }
  if (!options.dump.empty()) {
    std::error_code ec;
    if (fs::exists(options.dump, ec) && !fs::is_directory(options.dump, ec)) {
      return absl::InvalidArgumentError(
          fmt::format("{}: --dump needs a folder (it holds one .npy file per input and dump.json); a file is there",
                      options.dump.string()));
    }
    fs::create_directories(options.dump, ec);
    if (ec) return absl::InvalidArgumentError(fmt::format("{}: cannot create the dump folder: {}", options.dump.string(), ec.message()));
    settings.dump = std::make_shared<EvalDump>();
  }
  PQ_ASSIGN_OR_RETURN(nlohmann::json results, run_experiment(spec, registry, {run_dir, /*resume=*/true, settings}));
  if (!is_writer()) return results;  // data-parallel: rank 0 records
  if (settings.dump) {
    // Every setting that shaped a value (localisation, noise, attack, class rules), per instance.
    settings.dump->note("metric_settings", results["metric_settings"]);
    settings.dump->note("metrics", results["metrics"]);
    settings.dump->note("run", fs::absolute(run_dir).string());
    PQ_RETURN_IF_ERROR(annotate(settings.dump->write(options.dump), "writing the dump"));
  }
  PQ_ASSIGN_OR_RETURN(ResultsStore store, ResultsStore::open(db));
  PQ_RETURN_IF_ERROR(annotate(store.add_run(results), "recording the run"));
  return results;
}

}  // namespace protoquant
