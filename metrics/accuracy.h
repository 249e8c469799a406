// accuracy: top-1 and top-k accuracy of the interpretable model and of the black box; ties at the
// k-th logit get fractional credit (protoquant/classification.h). Its state is four sums.
#pragma once

#include "protoquant/metric.h"

namespace protoquant::metrics {

class Accuracy : public Metric {
 public:
  explicit Accuracy(int64_t top_k) : top_k_(top_k) {}
  MetricNeeds needs() const override { return {}; }
  absl::Status update(const EvalBatch& batch) override;
  absl::Status merge(const Metric& other) override;
  std::vector<torch::Tensor> partial_state() const override;
  absl::Status load_partial_state(const std::vector<torch::Tensor>& state) override;
  absl::StatusOr<nlohmann::json> compute() override;

 private:
  int64_t top_k_;
  std::string split_;
  int64_t samples_ = 0;
  double top1_ = 0, topk_ = 0, blackbox_top1_ = 0, blackbox_topk_ = 0;
  bool blackbox_ = false;
};

}  // namespace protoquant::metrics
