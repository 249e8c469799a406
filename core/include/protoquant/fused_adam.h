// torch::optim::Adam with its update written as one pass per parameter on the CPU.
//
// LibTorch's C++ Adam runs seven ATen operations per parameter and step (two moment updates, a
// square root, two divisions, an addition and addcdiv); on a head with two small parameters that
// was a twentieth of a step. This class does the same arithmetic in one loop, with the same
// state entries (AdamParamState: step, exp_avg, exp_avg_sq), so checkpoints written by either
// load into the other. Parameters it does not handle (AMSGrad, sparse or non-fp32 gradients,
// other devices, non-contiguous tensors) go through torch::optim::Adam::step unchanged.
#pragma once

#include <torch/optim/adam.h>

namespace protoquant {

class FusedAdam : public torch::optim::Adam {
 public:
  using torch::optim::Adam::Adam;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

}  // namespace protoquant
