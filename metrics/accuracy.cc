#include "accuracy.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "protoquant/classification.h"

namespace protoquant::metrics {

absl::StatusOr<nlohmann::json> Accuracy::evaluate(const EvalContext& context) {
  nlohmann::json values;
  values["accuracy"] = top_k_accuracy(context.logits, context.labels, 1);
  values[fmt::format("top{}_accuracy", top_k_)] = top_k_accuracy(context.logits, context.labels, top_k_);
  if (context.blackbox_logits.defined()) {
    values["blackbox_accuracy"] = top_k_accuracy(context.blackbox_logits, context.labels, 1);
    values[fmt::format("blackbox_top{}_accuracy", top_k_)] =
        top_k_accuracy(context.blackbox_logits, context.labels, top_k_);
  }
  return nlohmann::json{{"values", values}, {"settings", {{"split", context.split}, {"top_k", top_k_}, {"ties", "fractional"}}}};
}

}  // namespace protoquant::metrics
