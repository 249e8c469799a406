// A prototype head turns a feature map into class evidence through prototypes
// (METHOD.md, stage 3): similarity maps, presence scores and a non-negative class layer.
#pragma once

#include <absl/status/status.h>
#include <torch/nn/module.h>
#include <torch/types.h>

namespace protoquant {

struct HeadOutput {
  torch::Tensor logits;      // B x C (in training mode: the training objective's logits)
  torch::Tensor presence;    // B x P, a[b,p] in [0,1]
  torch::Tensor similarity;  // B x P x H x W, S[b,p,h,w]; eval mode only (undefined in training)
};

class Head : public torch::nn::Module {
 public:
  // Features arrive in fp32, or, from a head that says it reads them (below), in the dtype the
  // features are stored in (experiment.feature_dtype: fp32, fp16 or bf16).
  virtual HeadOutput forward(const torch::Tensor& features) = 0;
  // Whether forward() takes 16-bit features as stored, sparing the trainer a widening copy per
  // batch (and the head a narrowing one when it computes in bf16).
  virtual bool reads_16bit_features() const { return false; }
  // Added to the training loss (L1 sparsity, ...); an undefined tensor means none.
  virtual torch::Tensor regularization() { return {}; }
  // Non-negative class-to-prototype weights, C x P (what explanations and editing read).
  virtual torch::Tensor class_weights() const = 0;
  // The prototype vectors, P x D.
  virtual torch::Tensor prototypes() const = 0;

  // Stage 4, editing. Replace the class weights by `weights` (C x P, non-negative).
  virtual absl::Status set_class_weights(const torch::Tensor& /*weights*/) {
    return absl::UnimplementedError("this head does not support editing its class weights");
  }
  // Physically keep only the prototypes `keep` (1-D int64 indices, in order), in the prototype
  // vectors and the class weights alike. With `keep_in_softmax`, the removed prototypes still
  // compete in the softmax over prototypes, so predictions stay exactly the same; without it they
  // are gone entirely (cheaper inference; the softmax renormalises, so predictions may move).
  virtual absl::Status keep_prototypes(const torch::Tensor& /*keep*/, bool /*keep_in_softmax*/) {
    return absl::UnimplementedError("this head does not support removing prototypes");
  }
  // From now on, no gradient reaches the class weights where `mask` (C x P, bool) is false. The
  // limit stage fine-tunes a limited head this way: its removed weights are zero, and a step
  // without gradient leaves a zero where it is (weight decay only scales it).
  virtual absl::Status hold_class_weights(const torch::Tensor& /*mask*/) {
    return absl::UnimplementedError("this head does not support training with a fixed class-weight mask");
  }
};

// For hold_class_weights(): from now on, `parameter`'s gradient is zero outside `mask` (a bool
// tensor of its shape), so their optimiser moments stay zero too.
inline absl::Status hold_outside_mask(torch::Tensor& parameter, const torch::Tensor& mask) {
  if (!mask.defined() || mask.scalar_type() != torch::kBool || !mask.sizes().equals(parameter.sizes())) {
    return absl::InvalidArgumentError("the class-weight mask must be a bool tensor of the class weights' shape");
  }
  const torch::Tensor keep = mask.to(parameter.device(), parameter.scalar_type());
  parameter.register_hook([keep](const torch::Tensor& grad) { return grad * keep; });
  return absl::OkStatus();
}

}  // namespace protoquant
