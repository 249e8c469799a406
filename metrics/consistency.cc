#include "consistency.h"

#include "partial_state.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "part_hits.h"
#include "protoquant/status.h"

namespace protoquant::metrics {

ParamSchema Consistency::schema() {
  ParamSchema schema{ParamSpec::Float("part_threshold", 0.8, "a part must be hit on this fraction of images").range(0, 1),
                     ParamSpec::Bool("merge_left_right", false,
                                     "count 'left X' as 'right X' (the reference does not; purity does)")};
  return schema.extend(localisation_schema()).extend(prototype_classes_schema());
}

absl::Status Consistency::begin(const EvalContext& context) {
  PQ_RETURN_IF_ERROR(require_parts(context, "consistency"));
  height_ = context.image_height;
  width_ = context.image_width;
  classes_ = prototype_classes(context.class_weights, rule_);
  int64_t parts = 0;
  const std::vector<int64_t> group = part_groups(context.dataset->part_names, merge_, &parts);
  groups_ = group_matrix(group, parts);
  hits_ = torch::zeros({classes_.size(0), parts}, torch::kInt64);
  visible_ = torch::zeros_like(hits_);
  return absl::OkStatus();
}

absl::Status Consistency::update(const EvalBatch& batch) {
  const PartHits hits = part_hits(batch.similarity, batch.parts, batch.labels, classes_, height_, width_, localisation_);
  // Per merged part (G): a hit or a visible part of the group counts once (OR).
  const torch::Tensor visible =
      batch.parts.select(2, 2).to(torch::kCPU).gt(0.5).to(torch::kFloat32).matmul(groups_).gt(0).to(torch::kInt64);  // B x G
  hits_ += hits.hits.to(torch::kFloat32).matmul(groups_).gt(0).to(torch::kInt64).sum(0);  // P x G
  visible_ += hits.evaluated.to(torch::kInt64).t().matmul(visible);  // P x K
  return absl::OkStatus();
}

absl::Status Consistency::merge(const Metric& other) {
  const auto* o = dynamic_cast<const Consistency*>(&other);
  if (o == nullptr || !o->hits_.defined() || o->hits_.sizes() != hits_.sizes()) {
    return absl::InvalidArgumentError("consistency: merging a metric of another shape");
  }
  hits_ += o->hits_;
  visible_ += o->visible_;
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> Consistency::compute() {
  if (!classes_.defined()) return absl::FailedPreconditionError("consistency: computed before the evaluation pass began");
  const torch::Tensor evaluated = classes_.any(1);  // prototypes with at least one class
  const int64_t count = evaluated.sum().item<int64_t>();
  if (count == 0) return absl::FailedPreconditionError("consistency: no prototype has a class under the classes rule");
  // The reference's denominator: 0 visible becomes 1 (that part then scores 0).
  const torch::Tensor ratio = hits_.to(torch::kFloat64) / visible_.clamp_min(1).to(torch::kFloat64);
  const torch::Tensor consistent = ratio.ge(part_threshold_).any(1).logical_and(evaluated);
  // Beside the score, the ratio itself over the prototypes and the parts they saw: what random
  // prototypes score by chance alone, and how far from the threshold a model is.
  const torch::Tensor seen = visible_.gt(0).logical_and(evaluated.unsqueeze(1));
  const double mean_part_ratio = seen.any().item<bool>() ? ratio.masked_select(seen).mean().item<double>() : 0.0;
  nlohmann::json settings = localisation_.to_json();
  settings.update(rule_.to_json());
  settings["part_threshold"] = part_threshold_;
  settings["merge_left_right"] = merge_;
  settings["map"] = "similarity";
  return nlohmann::json{
      {"values",
       {{"consistency", 100.0 * consistent.sum().item<double>() / static_cast<double>(count)},
        {"mean_part_ratio", mean_part_ratio},
        {"evaluated_prototypes", count},
        {"consistent_prototypes", consistent.sum().item<int64_t>()}}},
      {"settings", settings}};
}

std::vector<torch::Tensor> Consistency::partial_state() const { return {hits_, visible_}; }

absl::Status Consistency::load_partial_state(const std::vector<torch::Tensor>& state) {
  PQ_RETURN_IF_ERROR(check_state(state, 2, "consistency"));
  hits_ = state[0].clone();
  visible_ = state[1].clone();
  return absl::OkStatus();
}

}  // namespace protoquant::metrics
