#include "assignment.h"

#include <stdexcept>

namespace protoquant::quantizers {

namespace F = torch::nn::functional;

Metric parse_metric(const std::string& name) {
  if (name == "cosine") return Metric::kCosine;
  if (name == "euclidean") return Metric::kEuclidean;
  throw std::invalid_argument("unknown metric " + name);
}

torch::Tensor nearest_code(const torch::Tensor& vectors, const torch::Tensor& codebook, Metric metric) {
  return nearest_codes(vectors.unsqueeze(0), codebook.unsqueeze(0), metric).squeeze(0);
}

torch::Tensor nearest_codes(const torch::Tensor& vectors, const torch::Tensor& codebooks, Metric metric) {
  torch::NoGradGuard no_grad;
  const auto codes = codebooks.detach();
  if (metric == Metric::kCosine) {
    // argmax_k cos(z, e_k) = argmax_k z.e_k / |e_k|: normalising z does not change the argmax,
    // so only the (small) codebook is normalised and the GEMM runs on the raw vectors.
    const auto unit = F::normalize(codes, F::NormalizeFuncOptions().dim(2).eps(1e-6));
    return torch::bmm(vectors, unit.transpose(1, 2)).argmax(2);
  }
  // argmin_k |z - e_k|^2 = argmax_k (2 z.e_k - |e_k|^2).
  const auto half_norms = codes.pow(2).sum(2).unsqueeze(1).mul(-0.5);  // M x 1 x K
  return torch::baddbmm(half_norms, vectors, codes.transpose(1, 2)).argmax(2);
}

void check_finite(const torch::Tensor& features, const char* quantizer) {
  TORCH_CHECK(features.detach().isfinite().all().item<bool>(), quantizer,
              ": input features contain NaN or infinity");
}

}  // namespace protoquant::quantizers
