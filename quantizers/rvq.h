// rvq: residual vector quantization with L levels of K codes each. Level 0 quantizes the feature
// vector (cosine or euclidean), every further level the residual left by the levels before it
// (euclidean: residuals carry magnitude); the reconstruction is the sum of the chosen codewords
// and the codebook loss sums each level's MSE to its detached target. The prototypes shown to
// the head are the level-0 codewords, the only ones that live where feature vectors live.
#pragma once

#include <string>

#include <torch/torch.h>

#include "assignment.h"
#include "protoquant/quantizer.h"

namespace protoquant::quantizers {

struct RvqOptions {
  int64_t dim = 0;
  int64_t levels = 2;
  int64_t codes = 256;
  std::string metric = "cosine";
  std::string init = "kmeans";
  int64_t kmeans_iterations = 10;
  SearchOptions search;
};

class ResidualQuantizer : public Quantizer {
 public:
  explicit ResidualQuantizer(const RvqOptions& options);

  Quantized quantize(const torch::Tensor& features) override;
  torch::Tensor codebook() const override { return codebooks_[0]; }
  int64_t num_codes() const override { return options_.codes; }
  absl::Status initialize(const torch::Tensor& sample) override;
  absl::Status keep_codes(const torch::Tensor& keep) override;
  torch::Tensor encode(const torch::Tensor& vectors) const override;

 private:
  RvqOptions options_;
  Metric metric_;
  torch::Tensor codebooks_;  // L x K x D
};

}  // namespace protoquant::quantizers
