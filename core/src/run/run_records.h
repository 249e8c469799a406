// What a finished run recorded per prototype, for pictures and the report: the codebook usage on
// the evaluated split (results.json's codebook_counts) and purity (the purity metric's stage
// record). Absent records give an undefined tensor or an empty vector, never an error: a run
// without a quantizer has no usage, a dataset without parts no purity.
#pragma once

#include <filesystem>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

namespace protoquant {

// P usage counts, when the run's results (results.json) hold one per prototype.
torch::Tensor recorded_usage(const nlohmann::json& results, int64_t prototypes);

// P purities (NaN: not evaluated), from the first purity metric of the run that has them.
std::vector<double> recorded_purity(const std::filesystem::path& run_dir, int64_t prototypes);

}  // namespace protoquant
