// The two elementwise passes of the fused presence node on the CPU, written as plain loops over
// one image's cells at a time (a few tens of KB, in cache) instead of six ATen passes over the
// whole G x N x K similarity tensor. With the GEMMs in bf16 they were most of a head step: at
// the quickstart's size (N = 128 x 7 x 7, K = 256) ATen's softmax and max over cells took
// 2.0 ms of a 7.6 ms step, these loops take about 0.75 ms for both directions, and the AVX-512
// kernels of presence_avx512.h, used for bf16 where the CPU has them, about 0.5 ms.
//
// Shapes: s and y are G x N x K with N = batch x cells, row-major; row_scale is G x N fp32 (one
// factor per cell: the inverse norm of its feature vector, so the GEMM can run on raw features),
// or undefined for 1. Storage may be fp32 or bf16; the arithmetic is fp32 either way.
#pragma once

#include <utility>

#include <torch/torch.h>

namespace protoquant::heads {

// The cells of a B x D x H x W CPU feature map (fp32, or bf16 when `dtype` is bf16: then used as
// stored, a view of a channels-last map) as G x N x d rows in `dtype` (fp32 or bf16;
// N = B*H*W, D = G*d), with the inverse norm of each row as stored (G x N fp32, norms clamped to
// eps): the inputs of prototype_presence for frozen features, in one pass over a channels-last
// map instead of a transposing copy, a conversion, a square and a sum. Returns {} for any other
// input (another device or dtype). The bf16 view shares the features' storage and version
// counter: changing them in place before the backward pass is an autograd error, as for any
// saved tensor.
std::pair<torch::Tensor, torch::Tensor> cells_and_inverse_norms(const torch::Tensor& features, int64_t groups,
                                                                torch::ScalarType dtype, double eps);

// The prototypes' side of the node, one pass over them instead of five small ATen operations:
// en = e / max(|e|, eps) * scale in `dtype` (fp32 or bf16; G x K x d), and the clamped norms
// (G x K x 1 fp32). Returns {} unless the prototypes are a contiguous fp32 CPU tensor.
std::pair<torch::Tensor, torch::Tensor> scaled_unit_prototypes(const torch::Tensor& prototypes, double scale,
                                                               double eps, torch::ScalarType dtype);

// Its backward, in one pass instead of ten operations: given g = dLoss/d(en) (G x K x d, fp32 or
// bf16), dLoss/de = g' - (g'.u) u with g' = g scale / norm and u = e / norm, where the norm was
// not clamped, and g' where it was. Returns {} when the forward above did not apply.
torch::Tensor scaled_unit_prototypes_backward(const torch::Tensor& grad, const torch::Tensor& prototypes,
                                              const torch::Tensor& norms, double scale, double eps);

// Whether the passes below handle this similarity tensor (CPU, contiguous, fp32 or bf16).
bool presence_cpu_supports(const torch::Tensor& s);

// Overwrites s with y = softmax_k(row_scale * s) and returns presence = max over each image's
// cells of y (G x B x K, fp32) with the cell of that max (G x B x K, int32; the first on ties).
// Fails with a clear message on non-finite similarities instead of returning garbage.
std::pair<torch::Tensor, torch::Tensor> softmax_max_over_cells_(torch::Tensor& s, const torch::Tensor& row_scale,
                                                                int64_t batch);

// Overwrites y (as left by the forward pass) with the gradient of the loss with respect to the
// raw similarities s, given the gradient of the loss with respect to presence:
//   dS[n,k] = row_scale[n] * (y[n,k] (dP[n,k] - sum_k' dP[n,k'] y[n,k'])),
// where dP is non-zero only at the argmax cell of each (image, k).
void softmax_max_over_cells_backward_(torch::Tensor& y, const torch::Tensor& presence, const torch::Tensor& argmax,
                                      const torch::Tensor& grad_presence, const torch::Tensor& row_scale,
                                      int64_t batch);

}  // namespace protoquant::heads
