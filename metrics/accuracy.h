// accuracy: top-1 and top-k accuracy of the interpretable model and of the black box; ties at the
// k-th logit get fractional credit (protoquant/classification.h).
#pragma once

#include "protoquant/metric.h"

namespace protoquant::metrics {

class Accuracy : public Metric {
 public:
  explicit Accuracy(int64_t top_k) : top_k_(top_k) {}
  absl::StatusOr<nlohmann::json> evaluate(const EvalContext& context) override;

 private:
  int64_t top_k_;
};

}  // namespace protoquant::metrics
