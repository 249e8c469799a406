#include "codebook_usage.h"

#include "partial_state.h"
#include "protoquant/status.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

namespace protoquant::metrics {

absl::Status CodebookUsageMetric::begin(const EvalContext& context) {
  if (!context.model->quantizer) return absl::FailedPreconditionError("codebook_usage: the model has no quantizer");
  usage_ = CodebookUsage(context.model->quantizer->subspaces(), context.model->quantizer->num_codes());
  split_ = context.split;
  return absl::OkStatus();
}

absl::Status CodebookUsageMetric::update(const EvalBatch& batch) {
  usage_.record(batch.codes.to(torch::kCPU));
  return absl::OkStatus();
}

absl::Status CodebookUsageMetric::merge(const Metric& other) {
  const auto* o = dynamic_cast<const CodebookUsageMetric*>(&other);
  if (o == nullptr) return absl::InvalidArgumentError("codebook_usage: merging another metric");
  usage_.merge(o->usage_);
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> CodebookUsageMetric::compute() {
  const UsageStats stats = usage_.stats();
  if (stats.total == 0) return absl::FailedPreconditionError("codebook_usage: no feature vectors were assigned");
  return nlohmann::json{{"values",
                         {{"used_codes", stats.used},
                          {"dead_fraction", stats.dead_fraction},
                          {"mean_perplexity", stats.mean_perplexity},
                          {"assignments", stats.total}}},
                        {"settings", {{"split", split_}, {"codebooks", stats.codebooks}, {"codes", stats.codes_per_codebook},
                                      {"counted", "every cell of every feature map, the quantizer's encode()"}}}};
}

std::vector<torch::Tensor> CodebookUsageMetric::partial_state() const { return {usage_.counts()}; }

absl::Status CodebookUsageMetric::load_partial_state(const std::vector<torch::Tensor>& state) {
  PQ_RETURN_IF_ERROR(check_state(state, 1, "codebook_usage"));
  return usage_.load_counts(state[0]);
}

}  // namespace protoquant::metrics
