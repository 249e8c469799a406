// Runs a validated experiment through its stages (see experiment_run.h for the stages, the
// artifact store and the run folder) and writes results.json (atomically, last) into the run
// folder.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>

#include "protoquant/experiment_run.h"
#include "protoquant/experiment_spec.h"
#include "protoquant/registry.h"

namespace protoquant {

struct RunOptions {
  std::filesystem::path out_dir;  // empty: <experiment.output>/<name>-<timestamp>
  // The folder of an earlier run, to run again: its filed stages are reused and an interrupted
  // one continues from its checkpoint (what every run does; --resume only insists that the
  // folder exists).
  bool resume = false;
  RunSettings settings;           // store and --force
  // Files the finished run elsewhere (the results store's row). Called after results.json is
  // in place; when it fails, results.json is removed again: a run is finished whole or not at all.
  std::function<absl::Status(const nlohmann::json&)> record;
};

// The results (also written to <run>/results.json): the stages' records, the metrics by
// instance, and the run's identity: run_id, finished_at, toolkit {version, commit},
// manifest_hash (SHA-256 of the resolved manifest), artifacts {stage: key}.
absl::StatusOr<nlohmann::json> run_experiment(const ExperimentSpec& spec, Registry& registry,
                                              const RunOptions& options);

// The default run folder of a manifest: <experiment.output>/<name>-<YYYYmmdd-HHMMSS>.
std::filesystem::path default_run_dir(const ExperimentSpec& spec);

}  // namespace protoquant
