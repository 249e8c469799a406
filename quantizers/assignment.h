// Nearest-code search, shared by every quantizer: one GEMM (batched over sub-spaces for PQ)
// followed by an argmax, never a loop over codes.
#pragma once

#include <string>

#include <torch/torch.h>

namespace protoquant::quantizers {

enum class Metric { kCosine, kEuclidean };
Metric parse_metric(const std::string& name);

// vectors: N x d, codebook: K x d -> N int64 indices of the nearest code (no gradient).
torch::Tensor nearest_code(const torch::Tensor& vectors, const torch::Tensor& codebook, Metric metric);

// Per sub-space: vectors M x N x d, codebooks M x K x d -> M x N indices (no gradient).
torch::Tensor nearest_codes(const torch::Tensor& vectors, const torch::Tensor& codebooks, Metric metric);

// Throws c10::Error naming the quantizer when `features` holds NaN or infinity.
void check_finite(const torch::Tensor& features, const char* quantizer);

}  // namespace protoquant::quantizers
