// pq: product quantization with FAISS ProductQuantizer semantics. D is split into M contiguous
// sub-spaces of D/M dimensions, each with its own codebook of K codes; a vector is quantized per
// sub-space and the codewords are concatenated. The codebooks are trained like vq's (gradient
// through the frozen head plus the codebook MSE); kmeans init runs k-means per sub-space.
// As prototypes, each (sub-space, code) pair is a sub-prototype of D/M dimensions compared on its
// own sub-space (subspaces() tells the head how to group them).
#pragma once

#include <string>

#include <torch/torch.h>

#include "assignment.h"
#include "protoquant/quantizer.h"

namespace protoquant::quantizers {

struct PqOptions {
  int64_t dim = 0;
  int64_t subspaces = 8;  // M
  int64_t codes = 256;    // K per sub-space
  std::string metric = "euclidean";
  std::string init = "kmeans";
  int64_t kmeans_iterations = 10;
  SearchOptions search;
};

class ProductQuantizer : public Quantizer {
 public:
  explicit ProductQuantizer(const PqOptions& options);

  Quantized quantize(const torch::Tensor& features) override;
  // (M*K) x (D/M): sub-space m's codes are rows m*K ... m*K + K - 1.
  torch::Tensor codebook() const override { return codebooks_.reshape({-1, codebooks_.size(2)}); }
  int64_t num_codes() const override { return options_.codes; }
  int64_t subspaces() const override { return options_.subspaces; }
  absl::Status initialize(const torch::Tensor& sample) override;
  absl::Status keep_codes(const torch::Tensor& keep) override;

  // Codes of N x D vectors: N x M int64 (FAISS compute_codes).
  torch::Tensor encode(const torch::Tensor& vectors) const override;
  // N x M codes back to N x D vectors (FAISS decode).
  torch::Tensor decode(const torch::Tensor& codes) const;

 private:
  PqOptions options_;
  Metric metric_;
  torch::Tensor codebooks_;  // M x K x D/M
};

}  // namespace protoquant::quantizers
