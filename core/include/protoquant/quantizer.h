// A quantizer maps every feature vector to a codeword of a learned codebook (METHOD.md, stage 1
// and "Quantizer variants"). Its codewords are the prototypes of the interpretable head.
#pragma once

#include <absl/status/status.h>
#include <torch/nn/module.h>
#include <torch/types.h>

#include "protoquant/codebook_usage.h"

namespace protoquant {

struct Quantized {
  torch::Tensor quantized;  // same shape as the input feature map, codewords substituted
  torch::Tensor indices;    // B x H x W (x codebooks) int64 code indices
  torch::Tensor loss;       // scalar codebook loss for the stage-1 objective (zero if none)
};

class Quantizer : public torch::nn::Module {
 public:
  // features B x D x H x W. Usage is recorded for every call; reset_usage() starts a pass.
  virtual Quantized quantize(const torch::Tensor& features) = 0;
  // Codes of N x D vectors: N x codebooks int64 (FAISS compute_codes); no usage, no gradient.
  virtual torch::Tensor encode(const torch::Tensor& vectors) const = 0;
  // The prototypes: P x d codeword vectors. With several sub-spaces (product quantization),
  // P = subspaces() * num_codes(), d = D / subspaces(), and rows m*K ... m*K+K-1 belong to
  // sub-space m (channels m*d ... m*d+d-1).
  virtual torch::Tensor codebook() const = 0;
  virtual int64_t num_codes() const = 0;  // K, per codebook
  virtual int64_t subspaces() const { return 1; }
  // Whether stage 1 trains the codebook by gradient (false: it updates itself, e.g. by EMA).
  virtual bool learns_by_gradient() const { return true; }
  // Data-dependent initialisation (k-means, ...) from N x D real feature vectors; a no-op for
  // data-free inits.
  virtual absl::Status initialize(const torch::Tensor& /*sample*/) { return absl::OkStatus(); }
  // Stage 2 (pruning): keep only the codes in `keep` (codebooks x K' int64, each row distinct
  // indices into that codebook, in the order they are to take); K becomes K' and the usage
  // statistics restart. Quantizers that cannot shrink say so.
  virtual absl::Status keep_codes(const torch::Tensor& /*keep*/) {
    return absl::UnimplementedError("this quantizer does not support pruning its codebook");
  }

  void reset_usage() { usage_.reset(); }
  // Data-parallel: after a pass over a split's shards, the whole split's counts on every rank.
  void all_reduce_usage() { usage_.all_reduce(); }
  UsageStats usage() const { return usage_.stats(); }

 protected:
  CodebookUsage usage_;
};

}  // namespace protoquant
