// Runs a validated experiment through its stages (see experiment_run.h for the stages and the
// run folder) and writes results.json (atomically, last) into the run folder.
#pragma once

#include <filesystem>

#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>

#include "protoquant/experiment_spec.h"
#include "protoquant/registry.h"

namespace protoquant {

struct RunOptions {
  std::filesystem::path out_dir;  // empty: <experiment.output>/<name>-<timestamp>
  bool resume = false;            // continue the run in out_dir (finished stages are loaded)
};

// The results (also written to <run>/results.json).
absl::StatusOr<nlohmann::json> run_experiment(const ExperimentSpec& spec, Registry& registry,
                                              const RunOptions& options);

}  // namespace protoquant
