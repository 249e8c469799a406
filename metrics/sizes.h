// sizes (PIP-Net's size metrics and METHOD.md stage 4): global size = prototypes with any class
// weight > global_threshold; sparsity = the fraction of weights <= global_threshold; local size
// per image = prototypes whose presence x weight for the predicted class exceeds local_threshold,
// averaged over the images (PIP-Net counts it across the batch axis, a bug not reproduced); and
// local size per class = prototypes with weight > class_threshold, averaged over the classes.
#pragma once

#include "protoquant/metric.h"

namespace protoquant::metrics {

class Sizes : public Metric {
 public:
  Sizes(double global_threshold, double local_threshold, double class_threshold)
      : global_threshold_(global_threshold), local_threshold_(local_threshold), class_threshold_(class_threshold) {}
  static ParamSchema schema();

  MetricNeeds needs() const override {
    MetricNeeds n;
    n.similarity = true;
    return n;
  }
  absl::Status begin(const EvalContext& context) override;
  absl::Status update(const EvalBatch& batch) override;
  absl::Status merge(const Metric& other) override;
  std::vector<torch::Tensor> partial_state() const override;
  absl::Status load_partial_state(const std::vector<torch::Tensor>& state) override;
  absl::StatusOr<nlohmann::json> compute() override;

 private:
  double global_threshold_, local_threshold_, class_threshold_;
  torch::Tensor weights_;  // C x P
  int64_t images_ = 0;
  int64_t local_total_ = 0;
};

}  // namespace protoquant::metrics
