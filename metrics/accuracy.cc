#include "accuracy.h"

#include "partial_state.h"
#include "protoquant/status.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "protoquant/classification.h"

namespace protoquant::metrics {

absl::Status Accuracy::update(const EvalBatch& batch) {
  const auto n = static_cast<double>(batch.labels.size(0));
  split_ = batch.split;
  samples_ += batch.labels.size(0);
  top1_ += top_k_accuracy(batch.logits, batch.labels, 1) * n;
  topk_ += top_k_accuracy(batch.logits, batch.labels, top_k_) * n;
  if (batch.blackbox_logits.defined()) {
    blackbox_ = true;
    blackbox_top1_ += top_k_accuracy(batch.blackbox_logits, batch.labels, 1) * n;
    blackbox_topk_ += top_k_accuracy(batch.blackbox_logits, batch.labels, top_k_) * n;
  }
  return absl::OkStatus();
}

absl::Status Accuracy::merge(const Metric& other) {
  const auto* o = dynamic_cast<const Accuracy*>(&other);
  if (o == nullptr || o->top_k_ != top_k_) return absl::InvalidArgumentError("accuracy: merging another metric");
  samples_ += o->samples_;
  top1_ += o->top1_;
  topk_ += o->topk_;
  blackbox_top1_ += o->blackbox_top1_;
  blackbox_topk_ += o->blackbox_topk_;
  blackbox_ = blackbox_ || o->blackbox_;
  if (split_.empty()) split_ = o->split_;
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> Accuracy::compute() {
  if (samples_ == 0) return absl::FailedPreconditionError("accuracy: no samples were evaluated");
  const auto n = static_cast<double>(samples_);
  nlohmann::json values;
  values["accuracy"] = top1_ / n;
  values[fmt::format("top{}_accuracy", top_k_)] = topk_ / n;
  if (blackbox_) {
    values["blackbox_accuracy"] = blackbox_top1_ / n;
    values[fmt::format("blackbox_top{}_accuracy", top_k_)] = blackbox_topk_ / n;
  }
  return nlohmann::json{{"values", values},
                        {"settings", {{"split", split_}, {"top_k", top_k_}, {"ties", "fractional"}, {"samples", samples_}}}};
}

std::vector<torch::Tensor> Accuracy::partial_state() const {
  return {scalar_state({static_cast<double>(samples_), top1_, topk_, blackbox_top1_, blackbox_topk_, blackbox_ ? 1.0 : 0.0})};
}

absl::Status Accuracy::load_partial_state(const std::vector<torch::Tensor>& state) {
  PQ_RETURN_IF_ERROR(check_state(state, 1, "accuracy"));
  const auto v = state[0].to(torch::kFloat64).contiguous();
  if (v.numel() != 6) return absl::InvalidArgumentError("accuracy: a partial state of another shape");
  const double* x = v.data_ptr<double>();
  samples_ = static_cast<int64_t>(x[0]);
  top1_ = x[1], topk_ = x[2], blackbox_top1_ = x[3], blackbox_topk_ = x[4];
  blackbox_ = x[5] != 0.0;
  return absl::OkStatus();
}

}  // namespace protoquant::metrics
