// accuracy: top-1 and top-k accuracy of the interpretable model and of the black box.
#pragma once

#include "protoquant/metric.h"

namespace protoquant::metrics {

class Accuracy : public Metric {
 public:
  explicit Accuracy(int64_t top_k) : top_k_(top_k) {}
  absl::StatusOr<nlohmann::json> evaluate(const EvalContext& context) override;

  // Fraction of rows whose label is among the k largest logits (ties count as hits).
  static double top_k_accuracy(const torch::Tensor& logits, const torch::Tensor& labels, int64_t k);

 private:
  int64_t top_k_;
};

}  // namespace protoquant::metrics
