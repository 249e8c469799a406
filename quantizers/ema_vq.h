// ema_vq: codewords are not trained by gradient but follow an exponential moving average of the
// feature vectors assigned to them (VQ-VAE-2 style, METHOD.md "Quantizer variants"):
//   N_k <- d N_k + (1 - d) n_k,   m_k <- d m_k + (1 - d) sum_{z -> k} z,
//   e_k = m_k / N^_k,   N^_k = (N_k + eps) / (sum N + K eps) * sum N    (Laplace smoothing)
// Dead-code restart: a code whose EMA count falls below `restart_threshold` times the expected
// count per batch (B*H*W / K) is re-seeded from a random vector of the current batch, so the
// threshold means the same at any batch and codebook size. Updates happen in training mode only.
#pragma once

#include <string>

#include <torch/torch.h>

#include "assignment.h"
#include "protoquant/quantizer.h"

namespace protoquant::quantizers {

struct EmaVqOptions {
  int64_t dim = 0;
  int64_t codes = 256;
  std::string metric = "cosine";
  std::string init = "kmeans";
  int64_t kmeans_iterations = 10;
  double decay = 0.99;
  double eps = 1e-5;
  double restart_threshold = 0.1;  // 0 disables restarts
  SearchOptions search;
};

class EmaVectorQuantizer : public Quantizer {
 public:
  explicit EmaVectorQuantizer(const EmaVqOptions& options);

  Quantized quantize(const torch::Tensor& features) override;
  torch::Tensor codebook() const override { return codebook_; }
  int64_t num_codes() const override { return options_.codes; }
  absl::Status initialize(const torch::Tensor& sample) override;
  absl::Status keep_codes(const torch::Tensor& keep) override;
  bool learns_by_gradient() const override { return false; }
  torch::Tensor encode(const torch::Tensor& vectors) const override {
    return nearest_code(vectors, codebook_, metric_, options_.search).unsqueeze(1);
  }

  int64_t restarts() const { return restarts_; }

 private:
  void update(const torch::Tensor& flat, const torch::Tensor& indices);

  EmaVqOptions options_;
  Metric metric_;
  torch::Tensor codebook_;   // K x D buffer
  torch::Tensor ema_count_;  // K
  torch::Tensor ema_sum_;    // K x D
  int64_t restarts_ = 0;
};

}  // namespace protoquant::quantizers
