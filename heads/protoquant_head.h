// protoquant: the interpretable head of METHOD.md stage 3.
//   S[b,p,h,w] = cos(z_bhw, e_p)              one GEMM of normalised vectors (per PQ sub-space)
//   A = softmax_p(S / tau)                    over the prototype axis
//   a[b,p] = max_{h,w} A[b,p,h,w]             presence in [0,1]
//   logits = a relu(W)^T                      W: C x P, init N(1, 0.1), no bias
// Options: L1 sparsity on relu(W), PIP-Net's training logits log(x^2 + 1), frozen prototypes.
#pragma once

#include <torch/torch.h>

#include "protoquant/head.h"

namespace protoquant::heads {

struct ProtoQuantHeadOptions {
  double temperature = 0.1;
  double sparsity = 0.0;        // lambda of lambda * sum(relu(W))
  bool pipnet_logits = false;   // train on log((a relu(W)^T)^2 + 1)
  bool train_prototypes = true;
  double weight_mean = 1.0;
  double weight_std = 0.1;
  double eps = 1e-6;
  bool bf16 = false;  // similarity GEMMs and softmax in bfloat16 (fp32 accumulation)
};

class ProtoQuantHead : public Head {
 public:
  // prototypes: P x d; with groups M > 1 (product quantization) rows m*P/M ... are compared on
  // channels m*d ... m*d+d-1 only, and the softmax runs over the prototypes of one sub-space.
  ProtoQuantHead(const torch::Tensor& prototypes, int64_t num_classes, int64_t groups,
                 const ProtoQuantHeadOptions& options);

  HeadOutput forward(const torch::Tensor& features) override;
  bool reads_16bit_features() const override { return true; }
  torch::Tensor regularization() override;
  torch::Tensor class_weights() const override { return torch::relu(weight_); }
  torch::Tensor prototypes() const override { return prototypes_; }
  absl::Status set_class_weights(const torch::Tensor& weights) override;
  absl::Status hold_class_weights(const torch::Tensor& mask) override;
  absl::Status keep_prototypes(const torch::Tensor& keep, bool keep_in_softmax) override;
  int64_t groups() const { return groups_; }
  const ProtoQuantHeadOptions& options() const { return options_; }

  torch::Tensor& weight() { return weight_; }

 private:
  HeadOutput forward_chunk(const torch::Tensor& features);
  // Training without removed prototypes runs as one fused node (presence.h); only it takes bf16
  // features as stored.
  bool fused_training_step() const { return is_training() && competitors_.size(0) == 0; }
  torch::Tensor class_logits(const torch::Tensor& presence);

  ProtoQuantHeadOptions options_;
  int64_t groups_ = 1;
  torch::Tensor prototypes_;  // P x D
  torch::Tensor weight_;      // C x P
  // Prototypes removed by editing that still take part in the softmax's denominator (Q x D,
  // usually 0 x D), so that removing unused prototypes leaves every prediction unchanged.
  torch::Tensor competitors_;
};

}  // namespace protoquant::heads
