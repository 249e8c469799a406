// funnybirds: FunnyBirds' evaluation protocols (funnybirds_protocols.h) on the run's model, its
// explanation being each prototype's presence x class weight put on the part its map points at
// (part_importance.h). Needs a dataset that re-renders its samples (synthparts); one line of
// refusal on any other.
#pragma once

#include <memory>

#include "funnybirds_protocols.h"
#include "part_importance.h"
#include "protoquant/localisation.h"
#include "protoquant/metric.h"

namespace protoquant::metrics {

class FunnyBirds : public Metric {
 public:
  FunnyBirds(FunnyBirdsSettings settings, ImportanceAssignment assignment, LocalisationSettings localisation)
      : settings_(std::move(settings)), assignment_(assignment), localisation_(localisation) {}
  static ParamSchema schema();
  static absl::StatusOr<std::shared_ptr<Metric>> build(const Params& params);

  MetricNeeds needs() const override { return MetricNeeds{}; }  // it re-renders the images itself
  absl::Status begin(const EvalContext& context) override;
  absl::Status update(const EvalBatch& batch) override;
  absl::Status merge(const Metric& other) override;
  std::vector<torch::Tensor> partial_state() const override;
  absl::Status load_partial_state(const std::vector<torch::Tensor>& state) override;
  absl::StatusOr<nlohmann::json> compute() override;

 private:
  FunnyBirdsSettings settings_;
  ImportanceAssignment assignment_;
  LocalisationSettings localisation_;
  std::unique_ptr<FunnyBirdsProtocols> protocols_;
  ProtocolForward forward_;
  ProtocolRender render_;
};

}  // namespace protoquant::metrics
