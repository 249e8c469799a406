// grounding (ProtoQuant's evidence against prototype drift; METHOD.md): per prototype, the mean of
// its top_k cosine similarities to the training split's feature vectors (each cell of each map).
// A codeword that real features were quantized to scores near 1; a free prototype may not. With
// product quantization each sub-prototype is compared on its own sub-space. The state is a
// running top-k per prototype.
#pragma once

#include "protoquant/metric.h"
#include "protoquant/params.h"

namespace protoquant::metrics {

class Grounding : public Metric {
 public:
  Grounding(int64_t top_k, double grounded_threshold) : top_k_(top_k), threshold_(grounded_threshold) {}
  static ParamSchema schema();

  MetricNeeds needs() const override {
    MetricNeeds n;
    n.eval_split = false;
    n.train_split = true;
    return n;
  }
  absl::Status begin(const EvalContext& context) override;
  absl::Status update(const EvalBatch& batch) override;
  absl::Status merge(const Metric& other) override;
  std::vector<torch::Tensor> partial_state() const override;
  absl::Status load_partial_state(const std::vector<torch::Tensor>& state) override;
  absl::StatusOr<nlohmann::json> compute() override;

 private:
  int64_t top_k_;
  double threshold_;
  int64_t groups_ = 1;
  torch::Tensor prototypes_;  // P x d, unit rows, on the evaluation device
  torch::Tensor top_;         // P x k, on the CPU
};

}  // namespace protoquant::metrics
