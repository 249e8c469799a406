// Shared by every quantizer's keep_codes() (stage 2, codebook pruning).
#pragma once

#include <cstdint>
#include <vector>

#include <absl/status/status.h>
#include <torch/types.h>

#include "protoquant/codebook_usage.h"

namespace protoquant::quantizers {

// The whole of keep_codes(): checks that `keep` is a codebooks x K' int64 tensor of distinct
// indices in [0, codes) per row, replaces each tensor of `books` by its kept codes in place (so
// registered parameters and buffers stay registered), sets `codes` to K' and restarts `usage`.
// A 3-D book is codebooks x K x d; a 1-D or 2-D one is K (x D) of a single codebook.
absl::Status keep_codebook_rows(const torch::Tensor& keep, int64_t codebooks, std::vector<torch::Tensor> books,
                                int64_t& codes, CodebookUsage& usage);

}  // namespace protoquant::quantizers
