// `protoquant evaluate RUN`: metrics on a finished run. Every stage up to the head is reused from
// the artifact store (an error names the first that is not filed); only the metric stages not
// filed yet are computed, in one evaluation pass. The values join the run's results.json and
// its record in the results store.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>

#include "protoquant/experiment_spec.h"
#include "protoquant/registry.h"

namespace protoquant {

struct EvaluateOptions {
  std::vector<std::string> metrics;  // "NAME" or "NAME:key=value,key=value"; empty: the manifest's
  std::string split;                 // empty: the run's experiment.eval_split
  std::filesystem::path store;       // empty: the store the run recorded
  std::filesystem::path db;          // empty: <run>/../results.db
  std::filesystem::path dump;        // non-empty: every metric's inputs go here (eval_dump.h)
};

// "purity:top_k=5,patch_size=8" -> the metric with those parameters (the others default),
// checked against its schema: one-line errors name the option.
absl::StatusOr<ComponentSpec> parse_metric_option(const std::string& text, const Registry& registry);

// The run's new results.json.
absl::StatusOr<nlohmann::json> evaluate_run(const std::filesystem::path& run_dir, const EvaluateOptions& options,
                                            Registry& registry);

}  // namespace protoquant
