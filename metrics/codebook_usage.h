// codebook_usage: the quantizer's usage statistics (METHOD.md, "Quantizer variants") over the
// evaluated split, as a metric: codes used, dead fraction and perplexity per codebook and mean.
#pragma once

#include "protoquant/codebook_usage.h"
#include "protoquant/metric.h"

namespace protoquant::metrics {

class CodebookUsageMetric : public Metric {
 public:
  MetricNeeds needs() const override {
    MetricNeeds n;
    n.quantizer = true;
    return n;
  }
  absl::Status begin(const EvalContext& context) override;
  absl::Status update(const EvalBatch& batch) override;
  absl::Status merge(const Metric& other) override;
  std::vector<torch::Tensor> partial_state() const override;
  absl::Status load_partial_state(const std::vector<torch::Tensor>& state) override;
  absl::StatusOr<nlohmann::json> compute() override;

 private:
  CodebookUsage usage_;
  std::string split_;
};

}  // namespace protoquant::metrics
