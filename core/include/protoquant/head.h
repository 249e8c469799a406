// A prototype head turns a feature map into class evidence through prototypes
// (METHOD.md, stage 3): similarity maps, presence scores and a non-negative class layer.
#pragma once

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
  virtual HeadOutput forward(const torch::Tensor& features) = 0;
  // Added to the training loss (L1 sparsity, ...); an undefined tensor means none.
  virtual torch::Tensor regularization() { return {}; }
  // Non-negative class-to-prototype weights, C x P (what explanations and editing read).
  virtual torch::Tensor class_weights() const = 0;
  // The prototype vectors, P x D.
  virtual torch::Tensor prototypes() const = 0;
};

}  // namespace protoquant
