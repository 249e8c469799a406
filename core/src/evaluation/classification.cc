#include "protoquant/classification.h"

#include <algorithm>

#include <torch/torch.h>

namespace protoquant {

double top_k_accuracy(const torch::Tensor& logits, const torch::Tensor& labels, int64_t k) {
  TORCH_CHECK(logits.dim() == 2 && labels.dim() == 1 && logits.size(0) == labels.size(0),
              "accuracy expects N x C logits and N labels");
  TORCH_CHECK(k >= 1, "top-k accuracy needs k >= 1");
  if (labels.numel() == 0) return 0.0;
  const auto scores = logits.to(torch::kFloat64);
  const auto own = scores.gather(1, labels.to(scores.device(), torch::kInt64).view({-1, 1}));
  const auto above = scores.gt(own).sum(1).to(torch::kFloat64);
  const auto equal = scores.eq(own).sum(1).to(torch::kFloat64);  // 0 only for a NaN own logit
  const double kk = static_cast<double>(std::min(k, logits.size(1)));
  const auto credit = ((kk - above) / equal.clamp_min(1.0)).clamp(0.0, 1.0).where(equal.gt(0), torch::zeros_like(above));
  return credit.mean().item<double>();
}

}  // namespace protoquant
