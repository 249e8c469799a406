// A stage of a run: one unit of the method, content-addressed. The stage runner
// (stage_runner.h) is written once over this interface: it keys the stage, reuses it when its
// key is filed in the store, otherwise computes it under the store's lock and files it, and
// records it in the run folder; opening a finished run loads every stage through the same
// build() and load() calls.
//
// To add a stage: one file in this folder implementing Stage, its factory in stages.h, and one
// line in ExperimentRun::compose() placing it in the run's order (CONTRIBUTING.md).
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include <absl/status/status.h>
#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>

namespace protoquant {

struct RunState;

class Stage {
 public:
  virtual ~Stage() = default;

  // Its name: its folder in the store, its record stages/<name>.json in the run folder.
  virtual std::string name() const = 0;
  // What its key hashes besides what every key holds (the core's identity, torch, seed,
  // device): manifest sections, upstream stages' keys (run.keys holds every earlier stage's),
  // the dataset's identity and the identity of the libraries its components come from.
  virtual absl::StatusOr<nlohmann::json> key_inputs(const RunState& run) const = 0;
  // Filed in the store as a whole (features are not: the feature cache files them per split).
  virtual bool filed() const { return true; }
  // Trains something: `protoquant evaluate` refuses to compute such a stage.
  virtual bool trains() const { return false; }
  // Its output files: name in the store's folder -> path in the run folder.
  virtual std::map<std::string, std::filesystem::path> outputs(const RunState& /*run*/) const { return {}; }

  // Builds its components into run.model; called whether the stage is then computed, reused or
  // opened, so every stage starts from its own seed.
  virtual absl::Status build(RunState& /*run*/) { return absl::OkStatus(); }
  // What it reads before its clock starts (features are the features' time, not the stage's).
  virtual absl::Status read_inputs(RunState& /*run*/) { return absl::OkStatus(); }
  // Computes the stage, writing its outputs (rank 0 writes); returns its record.
  virtual absl::StatusOr<nlohmann::json> compute(RunState& run) = 0;
  // Loads its outputs, placed in the run folder, into run.model: after a reuse, or opening a run.
  virtual absl::Status load(RunState& /*run*/, const nlohmann::json& /*record*/) { return absl::OkStatus(); }
  // What follows either way (freezing, the run's results from the record).
  virtual absl::Status finish(RunState& /*run*/, const nlohmann::json& /*record*/) { return absl::OkStatus(); }
};

}  // namespace protoquant
