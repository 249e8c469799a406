// Shared by every quantizer's keep_codes() (stage 2, codebook pruning).
#pragma once

#include <absl/status/status.h>
#include <torch/types.h>

namespace protoquant::quantizers {

// OK when `keep` is a codebooks x K' int64 tensor, 1 <= K' <= codes, each row distinct indices in
// [0, codes); otherwise a one-line reason.
absl::Status check_kept_codes(const torch::Tensor& keep, int64_t codebooks, int64_t codes);

// books: codebooks x K x d -> codebooks x K' x d, row m keeping keep[m].
torch::Tensor select_codes(const torch::Tensor& books, const torch::Tensor& keep);

}  // namespace protoquant::quantizers
