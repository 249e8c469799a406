// What a finished run folder recorded per prototype, read back for pictures and the report: the
// codebook usage on the evaluated split (results.json) and purity (the purity metric's stage
// record). Absent records give an undefined tensor or an empty vector, never an error: a run
// without a quantizer has no usage, a dataset without parts no purity.
#pragma once

#include <filesystem>
#include <vector>

#include <torch/types.h>

namespace protoquant {

// P usage counts, when results.json holds one per prototype.
torch::Tensor recorded_usage(const std::filesystem::path& run_dir, int64_t prototypes);

// P purities (NaN: not evaluated), from the first purity metric of the run that has them.
std::vector<double> recorded_purity(const std::filesystem::path& run_dir, int64_t prototypes);

}  // namespace protoquant
