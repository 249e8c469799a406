// The training-time core of the protoquant head as one autograd node:
//   presence[g,b,k] = max_n softmax_k(row_scale[g,n] z[g,n] . e[g,k] / (|e[g,k]| tau))[b,n,k]
// for G groups (PQ sub-spaces), N = B*HW cells and K prototypes per group. Written by hand
// because autograd's generic version makes six passes over the G x N x K similarity tensor (the
// largest in the step, e.g. 26 MB at B=64, 7x7, P=2048) and allocates as many: the softmax and
// the max over cells are one pass here (max with its argmax; presence_cpu.h on the CPU), and the
// backward is one pass over the saved softmax, because the max sends gradient to one cell per
// (b, k) only:
//   dS[n,k] = y[n,k] (dy[n,k] - sum_k' dy[n,k'] y[n,k']),  dy non-zero only at n = argmax.
// The prototypes' normalisation, temperature and conversion to the GEMM's dtype happen inside
// too: as separate operations they were ten autograd nodes on a small tensor, a tenth of a step
// at the quickstart's size.
#pragma once

#include <torch/torch.h>

namespace protoquant::heads {

// z: G x N x d cells (no gradient is computed for them unless they require one), prototypes:
// G x K x d, raw (normalised here, norms clamped to eps), N = B * cells. row_scale (G x N, a
// constant, or undefined for 1) multiplies each cell's similarities: the inverse norms of raw
// cells, which saves normalising z in a pass of its own (the gradient for z then treats the norm
// as fixed, so pass normalised cells instead where z needs a gradient). The GEMMs run in z's
// dtype (bf16 allowed; on the CPU the softmax is fp32 then). Returns G x B x K presence (fp32 on
// the CPU). Its backward runs once: no retain_graph, no double backward.
torch::Tensor prototype_presence(const torch::Tensor& z, const torch::Tensor& prototypes, int64_t batch,
                                 double temperature, const torch::Tensor& row_scale = {}, double eps = 1e-6);

}  // namespace protoquant::heads
