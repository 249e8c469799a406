// The bf16 search's second half on the CPU, one pass per vector: pick the best few codes from
// its row of bf16 scores (plus the fp32 bias), then score just those exactly in fp32 against the
// codebook, reading the code rows in place. Written by hand because the ATen version (bias add,
// topk, a gather of the candidate rows, batched GEMVs, argmax, gather) cost as much as the bf16
// GEMM itself and kept the search near 2x FAISS instead of the 2.5x asked for.
#pragma once

#include <torch/torch.h>

namespace protoquant::quantizers {

// Whether rerank_candidates handles these (CPU bf16 scores, fp32 vectors and codebook).
bool rerank_cpu_supports(const torch::Tensor& scores, const torch::Tensor& vectors);

// scores: M x n x K bf16 (contiguous) approximations of vectors . weights^T; vectors: M x n x d
// fp32 (contiguous rows, any row and group stride); weights: M x K x d fp32; bias: M x K fp32 or
// undefined. Returns M x n int64: argmax over the `candidates` best codes by score + bias of the
// exact fp32 vectors . weights_k + bias_k (the lower index on ties, as argmax). Throws c10::Error
// when any score is NaN.
torch::Tensor rerank_candidates(const torch::Tensor& scores, const torch::Tensor& vectors,
                                const torch::Tensor& weights, const torch::Tensor& bias, int64_t candidates);

}  // namespace protoquant::quantizers
