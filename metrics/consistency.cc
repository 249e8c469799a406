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
                                     "count 'left X' as 'right X' (the reference does not; purity does)"),
                     ParamSpec::Int("chance_seed", 0, "seed of the chance level's random peaks (per image: seed * "
                                                      "1000003 + its index)")
                         .min(0)};
  return schema.extend(localisation_schema()).extend(prototype_classes_schema());
}

absl::Status Consistency::begin(const EvalContext& context) {
  PQ_RETURN_IF_ERROR(require_parts(context, "consistency"));
  height_ = context.image_height;
  width_ = context.image_width;
  PQ_RETURN_IF_ERROR(resolve_localisation(localisation_, context, "consistency"));
  classes_ = prototype_classes(context.class_weights, rule_);
  int64_t parts = 0;
  const std::vector<int64_t> group = part_groups(context.dataset->part_names, merge_, &parts);
  groups_ = group_matrix(group, parts);
  hits_ = torch::zeros({classes_.size(0), parts}, torch::kInt64);
  visible_ = torch::zeros_like(hits_);
  chance_hits_ = torch::zeros_like(hits_);
  oracle_hits_ = torch::zeros_like(hits_);
  return absl::OkStatus();
}

absl::Status Consistency::update(const EvalBatch& batch) {
  const PartHits hits = part_hits(batch.similarity, batch.parts, batch.labels, classes_, height_, width_, localisation_);
  // Per merged part (G): a hit or a visible part of the group counts once (OR).
  const torch::Tensor visible =
      batch.parts.select(2, 2).to(torch::kCPU).gt(0.5).to(torch::kFloat32).matmul(groups_).gt(0).to(torch::kInt64);  // B x G
  hits_ += hits.hits.to(torch::kFloat32).matmul(groups_).gt(0).to(torch::kInt64).sum(0);  // P x G
  const torch::Tensor evaluated = hits.evaluated.to(torch::kInt64);                      // B x P
  visible_ += evaluated.t().matmul(visible);  // P x K

  // The chance and oracle levels, on the same pairs.
  const int64_t prototypes = classes_.size(0);
  if (!geometry_ || !geometry_->fits(batch.similarity.size(2), batch.similarity.size(3))) {
    geometry_.emplace(batch.similarity.size(2), batch.similarity.size(3), height_, width_, localisation_);
  }
  const torch::Tensor chance =
      chance_part_hits(*geometry_, batch.parts, batch.indices, prototypes, chance_seed_, height_, width_, localisation_)
          .logical_and(hits.evaluated.unsqueeze(2));
  chance_hits_ += chance.to(torch::kFloat32).matmul(groups_).gt(0).to(torch::kInt64).sum(0);
  const torch::Tensor oracle = oracle_part_hits(*geometry_, batch.parts, height_, width_, localisation_);  // B x K
  oracle_hits_ += evaluated.t().matmul(oracle.to(torch::kFloat32).matmul(groups_).gt(0).to(torch::kInt64));
  return absl::OkStatus();
}

absl::Status Consistency::merge(const Metric& other) {
  const auto* o = dynamic_cast<const Consistency*>(&other);
  if (o == nullptr || !o->hits_.defined() || o->hits_.sizes() != hits_.sizes()) {
    return absl::InvalidArgumentError("consistency: merging a metric of another shape");
  }
  hits_ += o->hits_;
  visible_ += o->visible_;
  chance_hits_ += o->chance_hits_;
  oracle_hits_ += o->oracle_hits_;
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> Consistency::compute() {
  if (!classes_.defined()) return absl::FailedPreconditionError("consistency: computed before the evaluation pass began");
  const torch::Tensor evaluated = classes_.any(1);  // prototypes with at least one class
  const int64_t count = evaluated.sum().item<int64_t>();
  if (count == 0) return absl::FailedPreconditionError("consistency: no prototype has a class under the classes rule");
  // Beside the score, the ratio itself over the prototypes and the parts they saw: what random
  // prototypes score by chance alone, and how far from the threshold a model is.
  const torch::Tensor seen = visible_.gt(0).logical_and(evaluated.unsqueeze(1));
  struct Level {
    double consistency, mean_part_ratio;
    int64_t consistent;
  };
  auto level = [&](const torch::Tensor& hits) {
    // The reference's denominator: 0 visible becomes 1 (that part then scores 0).
    const torch::Tensor ratio = hits.to(torch::kFloat64) / visible_.clamp_min(1).to(torch::kFloat64);
    const torch::Tensor consistent = ratio.ge(part_threshold_).any(1).logical_and(evaluated);
    const int64_t n = consistent.sum().item<int64_t>();
    return Level{100.0 * static_cast<double>(n) / static_cast<double>(count),
                 seen.any().item<bool>() ? ratio.masked_select(seen).mean().item<double>() : 0.0, n};
  };
  const Level model = level(hits_), chance = level(chance_hits_);
  // The oracle prototype is placed on its best part: the ratio of each part, its best one counts.
  const torch::Tensor oracle_ratio = oracle_hits_.to(torch::kFloat64) / visible_.clamp_min(1).to(torch::kFloat64);
  const Level oracle = level(oracle_hits_);
  const double oracle_best_part = seen.any().item<bool>()
                                      ? std::get<0>(oracle_ratio.masked_fill(seen.logical_not(), 0).max(1))
                                            .masked_select(evaluated)
                                            .mean()
                                            .item<double>()
                                      : 0.0;
  nlohmann::json settings = localisation_.to_json();
  settings.update(rule_.to_json());
  settings["part_threshold"] = part_threshold_;
  settings["merge_left_right"] = merge_;
  settings["map"] = "similarity";
  settings["chance_seed"] = chance_seed_;
  settings["chance"] = "each map peaks at one random cell (seeded per image)";
  settings["oracle"] = "each prototype peaks, on every image, at the cell nearest its best part's keypoint";
  return nlohmann::json{{"values",
                         {{"consistency", model.consistency},
                          {"mean_part_ratio", model.mean_part_ratio},
                          {"evaluated_prototypes", count},
                          {"consistent_prototypes", model.consistent},
                          {"consistency_chance", chance.consistency},
                          {"mean_part_ratio_chance", chance.mean_part_ratio},
                          {"consistency_oracle", oracle.consistency},
                          {"best_part_ratio_oracle", oracle_best_part}}},
                        {"settings", settings}};
}

std::vector<torch::Tensor> Consistency::partial_state() const { return {hits_, visible_, chance_hits_, oracle_hits_}; }

absl::Status Consistency::load_partial_state(const std::vector<torch::Tensor>& state) {
  PQ_RETURN_IF_ERROR(check_state(state, 4, "consistency"));
  hits_ = state[0].clone();
  visible_ = state[1].clone();
  chance_hits_ = state[2].clone();
  oracle_hits_ = state[3].clone();
  return absl::OkStatus();
}

}  // namespace protoquant::metrics
