// free_prototypes: the baseline ProtoQuant is compared against. PIP-Net-style prototypes that are
// free parameters trained in stage 3 rather than codewords of a learned codebook, with the same
// head otherwise: cosine similarity S, softmax over the prototypes at temperature tau, global
// max-pool to presence, and a non-negative class layer (optionally PIP-Net's log((a W^T)^2 + 1)
// training logits and an L1 penalty). It reads no codebook: a manifest using it has no
// [quantizer] and no codebook stage.
#pragma once

#include <torch/torch.h>

#include "protoquant/head.h"

namespace protoquant::heads {

struct FreePrototypesOptions {
  int64_t prototypes = 128;
  double temperature = 0.1;
  double sparsity = 0.0;
  bool pipnet_logits = false;
  double weight_mean = 1.0;
  double weight_std = 0.1;
  double eps = 1e-6;
};

class FreePrototypesHead : public Head {
 public:
  FreePrototypesHead(int64_t channels, int64_t classes, const FreePrototypesOptions& options);

  HeadOutput forward(const torch::Tensor& features) override;
  torch::Tensor regularization() override;
  torch::Tensor class_weights() const override { return torch::relu(weight_); }
  torch::Tensor prototypes() const override { return prototypes_; }
  absl::Status set_class_weights(const torch::Tensor& weights) override;
  absl::Status hold_class_weights(const torch::Tensor& mask) override;

 private:
  FreePrototypesOptions options_;
  torch::Tensor prototypes_;  // P x D, trained
  torch::Tensor weight_;      // C x P
};

}  // namespace protoquant::heads
