#include "funnybirds.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "part_hits.h"
#include "partial_state.h"
#include "protoquant/status.h"

namespace protoquant::metrics {

ParamSchema FunnyBirds::schema() {
  ParamSchema schema{
      ParamSpec::Int("thresholds", 80, "how many importance thresholds, evenly from threshold_min to threshold_max")
          .range(1, 10000),
      ParamSpec::Float("threshold_min", 0.01, "the lowest threshold: a part is important above it x the total")
          .range(0, 1),
      ParamSpec::Float("threshold_max", 0.5, "the highest threshold").range(0, 1),
      ParamSpec::Float("tolerance", 0.05,
                       "distractibility and background independence: a logit change under this share of |logit| is "
                       "no change")
          .range(0, 1),
      ParamSpec::String("importance", "mass",
                        "where a prototype's presence x weight goes: mass (split by its upsampled map's mass on each "
                        "part) or peak (the part under its map's peak, as the localisation settings find it)")
          .one_of({"peak", "mass"}),
      ParamSpec::Int("render_batch", 256, "re-rendered images per forward pass").range(1, 1 << 16)};
  return schema.extend(localisation_schema());
}

absl::StatusOr<std::shared_ptr<Metric>> FunnyBirds::build(const Params& params) {
  FunnyBirdsSettings settings;
  const int64_t count = params.get_int("thresholds");
  const double lo = params.get_float("threshold_min"), hi = params.get_float("threshold_max");
  if (hi < lo) {
    return absl::InvalidArgumentError(fmt::format("funnybirds: threshold_max {} is below threshold_min {}", hi, lo));
  }
  // numpy.linspace(lo, hi, count): the reference's get_p_thresholds.
  for (int64_t t = 0; t < count; ++t) {
    settings.thresholds.push_back(count == 1 ? lo : lo + (hi - lo) * static_cast<double>(t) / static_cast<double>(count - 1));
  }
  settings.tolerance = params.get_float("tolerance");
  settings.render_batch = params.get_int("render_batch");
  const ImportanceAssignment assignment =
      params.get_string("importance") == "mass" ? ImportanceAssignment::kMass : ImportanceAssignment::kPeak;
  return std::make_shared<FunnyBirds>(std::move(settings), assignment, localisation_settings(params));
}

absl::Status FunnyBirds::begin(const EvalContext& context) {
  const std::string dataset = context.dataset ? context.dataset->name : "?";
  if (!context.intervene || context.dataset == nullptr || !context.dataset->has_interventions) {
    return absl::FailedPreconditionError(fmt::format(
        "metric 'funnybirds' needs a dataset that re-renders its samples without parts or background objects "
        "(interventions), and dataset '{}' cannot",
        dataset));
  }
  if (!context.forward_images) return absl::FailedPreconditionError("funnybirds: the pass cannot run the model on images");
  PQ_RETURN_IF_ERROR(resolve_localisation(localisation_, context, "funnybirds"));
  const DatasetInfo& info = *context.dataset;
  protocols_ = std::make_unique<FunnyBirdsProtocols>(settings_, info.class_parts,
                                                     static_cast<int64_t>(info.part_names.size()));
  const torch::Tensor class_weights = context.class_weights;
  const torch::Device device = context.device;
  const auto forward_images = context.forward_images;
  const LocalisationSettings localisation_settings = localisation_;
  const ImportanceAssignment assignment = assignment_;
  forward_ = [=](const Batch& batch, const torch::Tensor& columns, int64_t num_columns,
                 bool explain) -> absl::StatusOr<ProtocolOutput> {
    torch::NoGradGuard no_grad;
    const HeadOutput out = forward_images(batch.images.to(device));
    ProtocolOutput result;
    result.logits = out.logits.to(torch::kCPU, torch::kFloat32);
    if (explain) {
      result.importance = prototype_part_importance(out.similarity, out.presence, class_weights, columns, num_columns,
                                                    localisation_settings, assignment);
    }
    return result;
  };
  render_ = context.intervene;
  return absl::OkStatus();
}

absl::Status FunnyBirds::update(const EvalBatch& batch) {
  if (!protocols_) return absl::FailedPreconditionError("funnybirds: update before begin");
  return protocols_->update(batch.indices, forward_, render_, dump_ ? &*dump_ : nullptr);
}

absl::Status FunnyBirds::merge(const Metric& other) {
  const auto* that = dynamic_cast<const FunnyBirds*>(&other);
  if (that == nullptr || !that->protocols_ || !protocols_) {
    return absl::InvalidArgumentError("funnybirds: merging with another metric, or before begin");
  }
  protocols_->merge(*that->protocols_);
  return absl::OkStatus();
}

std::vector<torch::Tensor> FunnyBirds::partial_state() const {
  return {protocols_ ? protocols_->state() : torch::Tensor()};
}

absl::Status FunnyBirds::load_partial_state(const std::vector<torch::Tensor>& state) {
  PQ_RETURN_IF_ERROR(check_state(state, 1, "funnybirds"));
  if (!protocols_) return absl::FailedPreconditionError("funnybirds: loading a state before begin");
  return protocols_->load_state(state[0]);
}

absl::StatusOr<nlohmann::json> FunnyBirds::compute() {
  if (!protocols_) return absl::FailedPreconditionError("funnybirds: compute before begin");
  nlohmann::json out = protocols_->compute();
  out["settings"]["importance"] = assignment_ == ImportanceAssignment::kMass ? "mass" : "peak";
  out["settings"]["localisation"] = localisation_.to_json();
  return out;
}

}  // namespace protoquant::metrics
