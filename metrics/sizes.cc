#include "sizes.h"

#include "partial_state.h"
#include "protoquant/status.h"

#include <torch/torch.h>

namespace protoquant::metrics {

ParamSchema Sizes::schema() {
  return ParamSchema{
      ParamSpec::Float("global_threshold", 1e-3, "a weight above this counts (global size, sparsity)").min(0),
      ParamSpec::Float("local_threshold", 1e-3, "presence x weight above this counts (local size per image)").min(0),
      ParamSpec::Float("class_threshold", 0.1, "a weight above this counts (local size per class)").min(0)};
}

absl::Status Sizes::begin(const EvalContext& context) {
  weights_ = context.class_weights.to(torch::kFloat32);
  return absl::OkStatus();
}

absl::Status Sizes::update(const EvalBatch& batch) {
  const torch::Tensor predicted = batch.logits.argmax(1).to(torch::kCPU);
  const torch::Tensor contribution = batch.presence.detach().to(torch::kCPU, torch::kFloat32) *
                                     weights_.index_select(0, predicted);  // B x P
  local_total_ += contribution.gt(local_threshold_).sum().item<int64_t>();
  images_ += batch.labels.size(0);
  return absl::OkStatus();
}

absl::Status Sizes::merge(const Metric& other) {
  const auto* o = dynamic_cast<const Sizes*>(&other);
  if (o == nullptr) return absl::InvalidArgumentError("sizes: merging another metric");
  images_ += o->images_;
  local_total_ += o->local_total_;
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> Sizes::compute() {
  if (images_ == 0) return absl::FailedPreconditionError("sizes: no images were evaluated");
  const torch::Tensor used = weights_.gt(global_threshold_);
  return nlohmann::json{
      {"values",
       {{"global_size", used.any(0).sum().item<int64_t>()},
        {"sparsity", 1.0 - used.to(torch::kFloat64).mean().item<double>()},
        {"local_size_per_image", static_cast<double>(local_total_) / static_cast<double>(images_)},
        {"local_size_per_class", weights_.gt(class_threshold_).to(torch::kFloat64).sum(1).mean().item<double>()},
        {"prototypes", weights_.size(1)}}},
      {"settings",
       {{"global_threshold", global_threshold_}, {"local_threshold", local_threshold_},
        {"class_threshold", class_threshold_}, {"predicted_class", "argmax of the logits, first on ties"}}}};
}

std::vector<torch::Tensor> Sizes::partial_state() const {
  return {scalar_state({static_cast<double>(images_), static_cast<double>(local_total_)})};
}

absl::Status Sizes::load_partial_state(const std::vector<torch::Tensor>& state) {
  PQ_RETURN_IF_ERROR(check_state(state, 1, "sizes"));
  const auto v = state[0].to(torch::kFloat64).contiguous();
  if (v.numel() != 2) return absl::InvalidArgumentError("sizes: a partial state of another shape");
  images_ = static_cast<int64_t>(v[0].item<double>());
  local_total_ = static_cast<int64_t>(v[1].item<double>());
  return absl::OkStatus();
}

}  // namespace protoquant::metrics
