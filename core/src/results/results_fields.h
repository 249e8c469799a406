// The run-level fields of a results JSON, read and checked before the results store's
// transaction starts (results_fields.cc).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>

#include "protoquant/results_store.h"

namespace protoquant {

// The run-level fields of a results JSON, checked before the transaction starts.
struct RunFields {
  std::string run_id, finished_at, experiment, toolkit_version, toolkit_commit, manifest_hash, cpu_model, run_dir;
  std::optional<double> total_seconds;
  std::vector<std::pair<std::string, StageRecord>> stages;
  nlohmann::json manifest, metrics;  // required objects
};

// `file` names the results in errors: "<file>: results of run '<id>': 'stages.head.seconds' is
// not a number".
absl::StatusOr<RunFields> read_run_fields(const nlohmann::json& results, const std::string& file);

}  // namespace protoquant
