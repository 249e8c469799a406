#include "protoquant/model_size.h"

#include <torch/torch.h>

namespace protoquant {

ModelSize model_size(const torch::Tensor& class_weights, double local_threshold, double global_threshold) {
  const auto w = class_weights.detach().to(torch::kCPU, torch::kFloat64);
  ModelSize size;
  size.local_size = w.gt(local_threshold).sum(1).to(torch::kFloat64).mean().item<double>();
  size.global_size = w.gt(global_threshold).any(0).sum().item<int64_t>();
  size.sparsity = w.le(global_threshold).to(torch::kFloat64).mean().item<double>();
  return size;
}

}  // namespace protoquant
