// Nearest-code search, shared by every quantizer: one GEMM (batched over sub-spaces for PQ)
// followed by an argmax, never a loop over codes. Optionally a bf16 candidate search (oneDNN
// runs bf16 GEMMs several times faster than fp32 on CPUs with AVX512-BF16/AMX) whose best few
// candidates are re-ranked exactly in fp32, so the result matches the exact search almost always.
#pragma once

#include <string>

#include <torch/torch.h>

namespace protoquant::quantizers {

enum class Metric { kCosine, kEuclidean };
Metric parse_metric(const std::string& name);

struct SearchOptions {
  bool bf16 = false;       // bf16 candidate GEMM + exact fp32 re-rank
  int64_t candidates = 4;  // re-ranked per vector when bf16
};

// vectors: N x d, codebook: K x d -> N int64 indices of the nearest code (no gradient).
torch::Tensor nearest_code(const torch::Tensor& vectors, const torch::Tensor& codebook, Metric metric,
                           const SearchOptions& search = {});

// Per sub-space: vectors M x N x d, codebooks M x K x d -> M x N indices (no gradient).
torch::Tensor nearest_codes(const torch::Tensor& vectors, const torch::Tensor& codebooks, Metric metric,
                            const SearchOptions& search = {});

// The (B*H*W) x D rows of a B x D x H x W feature map (a view for channels-last maps). Throws
// c10::Error naming the quantizer when the shape is not B x `dim` x H x W or the map holds NaN or
// infinity.
torch::Tensor feature_rows(const torch::Tensor& features, int64_t dim, const char* quantizer);

}  // namespace protoquant::quantizers
