// What the codebook stage and the pruning stage share (codebook_stage.cc).
#pragma once

#include <functional>

#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>

#include "stages/run_state.h"

namespace protoquant {

// Stage 1's objective (also stage 2's re-training): w_task CE(g(Zq), y) + w_cb codebook loss.
std::function<torch::Tensor(const Batch&)> codebook_objective(RunState& run, const TrainSettings& settings);
// Usage over the whole evaluation split, and how well g classifies quantized maps: filed with
// the codebook (and prune) stage, so a reused codebook reports them without any feature pass.
absl::StatusOr<nlohmann::json> measure_usage(RunState& run);
// The last quantizer stage's usage is the run's codebook metric; its per-code counts stay beside
// the metrics (a list, not a value).
void report_usage(RunState& run, const nlohmann::json& record);

}  // namespace protoquant
