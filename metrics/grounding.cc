#include "grounding.h"

#include "partial_state.h"
#include "protoquant/status.h"

#include <limits>

#include <fmt/format.h>
#include <torch/torch.h>

namespace protoquant::metrics {

ParamSchema Grounding::schema() {
  return ParamSchema{ParamSpec::Int("top_k", 10, "nearest training feature vectors per prototype").range(1, 100000),
                     ParamSpec::Float("grounded_threshold", 0.99, "a prototype counts as grounded above this").range(-1, 1)};
}

absl::Status Grounding::begin(const EvalContext& context) {
  const torch::Tensor prototypes = context.model->head->prototypes().detach().to(context.device, torch::kFloat32);
  groups_ = context.model->quantizer ? context.model->quantizer->subspaces() : 1;
  if (groups_ < 1 || prototypes.size(0) % groups_ != 0) {
    return absl::InvalidArgumentError(fmt::format("grounding: {} prototypes do not split into {} sub-spaces",
                                                  prototypes.size(0), groups_));
  }
  prototypes_ = torch::nn::functional::normalize(prototypes, torch::nn::functional::NormalizeFuncOptions().dim(1).eps(1e-6));
  top_ = torch::full({prototypes.size(0), top_k_}, -std::numeric_limits<float>::infinity(), torch::kFloat32);
  return absl::OkStatus();
}

absl::Status Grounding::update(const EvalBatch& batch) {
  torch::NoGradGuard no_grad;
  const torch::Tensor& f = batch.features;  // B x D x h x w
  const torch::Tensor rows = f.permute({0, 2, 3, 1}).reshape({-1, f.size(1)});
  const int64_t p = prototypes_.size(0), per_group = p / groups_, d = rows.size(1) / groups_;
  std::vector<torch::Tensor> best;
  for (int64_t m = 0; m < groups_; ++m) {
    const torch::Tensor sub = torch::nn::functional::normalize(
        rows.slice(1, m * d, (m + 1) * d), torch::nn::functional::NormalizeFuncOptions().dim(1).eps(1e-6));
    const torch::Tensor cosine = prototypes_.slice(0, m * per_group, (m + 1) * per_group).matmul(sub.t());
    best.push_back(std::get<0>(cosine.topk(std::min(top_k_, cosine.size(1)), 1)).to(torch::kCPU));
  }
  top_ = std::get<0>(torch::cat({top_, torch::cat(best, 0)}, 1).topk(top_k_, 1));
  return absl::OkStatus();
}

absl::Status Grounding::merge(const Metric& other) {
  const auto* o = dynamic_cast<const Grounding*>(&other);
  if (o == nullptr || !o->top_.defined() || o->top_.sizes() != top_.sizes()) {
    return absl::InvalidArgumentError("grounding: merging a metric of another shape");
  }
  top_ = std::get<0>(torch::cat({top_, o->top_}, 1).topk(top_k_, 1));
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> Grounding::compute() {
  if (!top_.defined()) return absl::FailedPreconditionError("grounding: computed before the evaluation pass began");
  if (!torch::isfinite(top_).all().item<bool>()) {
    return absl::FailedPreconditionError(fmt::format("grounding: fewer than top_k = {} training feature vectors", top_k_));
  }
  const torch::Tensor per_prototype = top_.to(torch::kFloat64).mean(1);
  if (dump_) dump_->set("top_cosines", top_, "P x k the top-k cosine similarities of each prototype to training vectors");
  return nlohmann::json{{"values",
                         {{"grounding", per_prototype.mean().item<double>()},
                          {"grounding_min", per_prototype.min().item<double>()},
                          {"grounded_fraction", per_prototype.gt(threshold_).to(torch::kFloat64).mean().item<double>()},
                          {"prototypes", per_prototype.size(0)}}},
                        {"settings", {{"top_k", top_k_}, {"grounded_threshold", threshold_}, {"similarity", "cosine, eps 1e-6"},
                                      {"subspaces", groups_}}}};
}

std::vector<torch::Tensor> Grounding::partial_state() const { return {top_}; }

absl::Status Grounding::load_partial_state(const std::vector<torch::Tensor>& state) {
  PQ_RETURN_IF_ERROR(check_state(state, 1, "grounding"));
  top_ = state[0].clone();
  return absl::OkStatus();
}

}  // namespace protoquant::metrics
