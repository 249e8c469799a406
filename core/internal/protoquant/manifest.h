// TOML experiment manifests: parse (merging the chain of files an `extends` key names), apply
// --set overrides, load the plugins the manifest names, and validate every table against its
// component's schema before any work starts. All errors are collected, one line each, as
// `file:line:column: message`, naming the file that set the value (CaBRNet-style coherence checks
// that need built components happen later, in the runner). A manifest with [sweep] describes
// several runs: load it with load_sweep() (protoquant/sweep.h).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <absl/status/statusor.h>

#include <nlohmann/json.hpp>

#include "protoquant/experiment_spec.h"
#include "protoquant/registry.h"

namespace protoquant {

// overrides: "dotted.key=value", the value in TOML syntax (a bare word is taken as a string).
// On failure the status message holds one error per line. A manifest with [sweep] is an error.
absl::StatusOr<ExperimentSpec> load_experiment(const std::filesystem::path& manifest,
                                               const std::vector<std::string>& overrides, Registry& registry);

// The resolved manifest (ExperimentSpec::resolved) as TOML text: every default written out and
// every path absolute, so a run folder's copy reproduces the run wherever it is started from.
std::string resolved_manifest_toml(const nlohmann::json& resolved);

}  // namespace protoquant
