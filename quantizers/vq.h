// vq: the paper's quantizer (METHOD.md stage 1). Hard assignment by cosine similarity (default)
// or euclidean distance, computed as one GEMM plus argmax with no gradient; the raw codeword
// replaces the feature vector; the codebook loss is MSE(e_k*, stopgrad(z)).
#pragma once

#include <string>

#include <torch/torch.h>

#include "assignment.h"
#include "protoquant/quantizer.h"

namespace protoquant::quantizers {

struct VqOptions {
  int64_t dim = 0;
  int64_t codes = 256;
  std::string metric = "cosine";  // or "euclidean"
  std::string init = "orthogonal";
  int64_t kmeans_iterations = 10;
  SearchOptions search;
};

class VectorQuantizer : public Quantizer {
 public:
  explicit VectorQuantizer(const VqOptions& options);

  Quantized quantize(const torch::Tensor& features) override;
  torch::Tensor codebook() const override { return codebook_; }
  int64_t num_codes() const override { return options_.codes; }
  absl::Status initialize(const torch::Tensor& sample) override;
  absl::Status keep_codes(const torch::Tensor& keep) override;
  torch::Tensor encode(const torch::Tensor& vectors) const override {
    return nearest_code(vectors, codebook_, metric_, options_.search).unsqueeze(1);
  }

 private:
  VqOptions options_;
  Metric metric_;
  torch::Tensor codebook_;
};

}  // namespace protoquant::quantizers
