// The one place a stage is run: reused when its key is filed in the store (its files placed in
// the run folder), otherwise computed under the store's lock and filed; recorded in the run
// folder as stages/<name>.json either way. Opening a finished run loads the stage from the run
// folder instead and trains nothing.
//
// Data-parallel: rank 0 decides whether the stage is reused or computed (so every rank takes the
// same path through the collectives) and only it touches the store and the run folder; the
// others compute beside it and read the record it wrote.
#pragma once

#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>

#include "stages/run_state.h"
#include "stages/stage.h"

namespace protoquant {

struct StageOutcome {
  nlohmann::json record;
  bool reused = false;  // reused from the store, or opened from the run folder
};

absl::StatusOr<StageOutcome> run_stage(RunState& run, Stage& stage);

}  // namespace protoquant
