// torch::optim::Adam with its update written as one pass per parameter on the CPU.
//
// LibTorch's C++ Adam runs eight ATen operations per parameter and step (mul_, add_, mul_,
// addcmul_, sqrt, div, add_, addcdiv_; nine with weight decay); on a head with two small
// parameters that was a twentieth of a step. This class does the same arithmetic in one loop
// (scalars rounded as ATen rounds them), with the same state entries (AdamParamState: step,
// exp_avg, exp_avg_sq), so checkpoints written by either load into the other. A step with any
// parameter it does not handle (AMSGrad, sparse or non-fp32 gradients, other devices, tensors
// that are not contiguous, such as channels-last conv weights, or moments of another shape) runs
// whole through torch::optim::Adam::step.
#pragma once

#include <torch/optim/adam.h>

namespace protoquant {

class FusedAdam : public torch::optim::Adam {
 public:
  using torch::optim::Adam::Adam;
  torch::Tensor step(LossClosure closure = nullptr) override;

 private:
  bool fusable(const torch::Tensor& p, const torch::optim::AdamOptions& options) const;
};

}  // namespace protoquant
