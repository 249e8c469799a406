// The training-time core of the protoquant head as one autograd node:
//   presence[g,b,k] = max_n softmax_k(zn[g] en[g]^T)[b,n,k]
// for G groups (PQ sub-spaces), N = B*HW cells and K prototypes per group. Written by hand
// because autograd's generic version makes six passes over the G x N x K similarity tensor (the
// largest in the step, e.g. 26 MB at B=64, 7x7, P=2048) and allocates as many: the softmax and
// the max over cells are one pass here (max with its argmax), and the backward is one pass over
// the saved softmax, because the max sends gradient to one cell per (b, k) only:
//   dS[n,k] = y[n,k] (dy[n,k] - sum_k' dy[n,k'] y[n,k']),  dy non-zero only at n = argmax.
#pragma once

#include <torch/torch.h>

namespace protoquant::heads {

// zn: G x N x d (normalised cells; no gradient is computed for it unless it requires one),
// en: G x K x d (normalised prototypes already scaled by 1/tau). N must be B * cells.
// Returns G x B x K presence. Inputs may be bf16 (the GEMMs then run in bf16).
torch::Tensor prototype_presence(const torch::Tensor& zn, const torch::Tensor& en, int64_t batch);

}  // namespace protoquant::heads
