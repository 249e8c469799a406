#include "accuracy.h"

#include <fmt/format.h>
#include <torch/torch.h>

namespace protoquant::metrics {

double Accuracy::top_k_accuracy(const torch::Tensor& logits, const torch::Tensor& labels, int64_t k) {
  TORCH_CHECK(logits.dim() == 2 && labels.dim() == 1 && logits.size(0) == labels.size(0),
              "accuracy expects N x C logits and N labels");
  if (labels.numel() == 0) return 0.0;
  // The label's logit against the k-th largest: equal to it or above counts as a hit.
  const int64_t kk = std::min(k, logits.size(1));
  const auto kth = std::get<0>(logits.topk(kk, 1)).select(1, kk - 1);
  const auto own = logits.gather(1, labels.view({-1, 1}).to(torch::kInt64)).squeeze(1);
  return own.ge(kth).to(torch::kFloat64).mean().item<double>();
}

absl::StatusOr<nlohmann::json> Accuracy::evaluate(const EvalContext& context) {
  nlohmann::json values;
  values["accuracy"] = top_k_accuracy(context.logits, context.labels, 1);
  values[fmt::format("top{}_accuracy", top_k_)] = top_k_accuracy(context.logits, context.labels, top_k_);
  if (context.blackbox_logits.defined()) {
    values["blackbox_accuracy"] = top_k_accuracy(context.blackbox_logits, context.labels, 1);
    values[fmt::format("blackbox_top{}_accuracy", top_k_)] =
        top_k_accuracy(context.blackbox_logits, context.labels, top_k_);
  }
  return nlohmann::json{{"values", values}, {"settings", {{"split", context.split}, {"top_k", top_k_}}}};
}

}  // namespace protoquant::metrics
