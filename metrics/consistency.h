// consistency (EvalProtoPNet, Huang et al. ICCV 2023; METHOD.md): a prototype is consistent when
// some part lies in the region around its peak on >= part_threshold of its classes' test images
// where that part is visible. Score = 100 x the fraction of consistent prototypes. Left and right
// parts are not merged (as the reference; merge_left_right = true merges them as purity does).
// Beside the score, its chance level (each map peaking at a random cell) and oracle level (each
// prototype's map peaking on a part's keypoint, as near as the grid allows). The state is per
// (prototype, part) hit and visibility counts, so it streams and merges.
#pragma once

#include <optional>

#include "part_hits.h"
#include "protoquant/localisation.h"
#include "protoquant/metric.h"
#include "protoquant/prototype_classes.h"

namespace protoquant::metrics {

class Consistency : public Metric {
 public:
  Consistency(LocalisationSettings localisation, PrototypeClassRule classes, double part_threshold, bool merge_left_right,
              uint64_t chance_seed = 0)
      : localisation_(localisation),
        rule_(std::move(classes)),
        part_threshold_(part_threshold),
        merge_(merge_left_right),
        chance_seed_(chance_seed) {}
  static ParamSchema schema();

  MetricNeeds needs() const override {
    MetricNeeds n;
    n.similarity = n.parts = true;
    return n;
  }
  absl::Status begin(const EvalContext& context) override;
  absl::Status update(const EvalBatch& batch) override;
  absl::Status merge(const Metric& other) override;
  std::vector<torch::Tensor> partial_state() const override;
  absl::Status load_partial_state(const std::vector<torch::Tensor>& state) override;
  absl::StatusOr<nlohmann::json> compute() override;

 private:
  LocalisationSettings localisation_;
  PrototypeClassRule rule_;
  double part_threshold_;
  bool merge_;
  uint64_t chance_seed_;
  std::optional<PeakGeometry> geometry_;  // the feature grid's, from the first batch
  torch::Tensor groups_;  // K x G one-hot: parts merged by OR (identity unless merge_left_right)
  int64_t height_ = 0, width_ = 0;
  torch::Tensor classes_;  // P x C bool
  torch::Tensor hits_;     // P x K int64: images of p's classes where part k is in p's region
  torch::Tensor visible_;  // P x K int64: images of p's classes where part k is visible
  // The same counts for the chance and oracle levels (part_hits.h: PeakGeometry); the images
  // and visibility are the model's, so visible_ serves all three.
  torch::Tensor chance_hits_, oracle_hits_;
};

}  // namespace protoquant::metrics
