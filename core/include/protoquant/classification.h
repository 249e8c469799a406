// Top-k accuracy with a tie rule that cannot reward a constant classifier.
#pragma once

#include <torch/types.h>

namespace protoquant {

// Expected top-k accuracy when ties are broken uniformly at random: a row whose label logit has
// g logits strictly above it and e logits equal to it (itself included) scores
// clamp((k - g) / e, 0, 1). A clear hit scores 1, a clear miss 0, and a row of C equal logits
// k / C, the chance level; `own >= kth` would give that row 1 (an edited head with zeroed
// weights scored top-1 = 1.0 that way). Unlike argmax's first-index rule it does not depend on
// the order of the classes. A NaN label logit scores 0. Labels are int64 indices into C.
double top_k_accuracy(const torch::Tensor& logits, const torch::Tensor& labels, int64_t k);

}  // namespace protoquant
