// stability (EvalProtoPNet; METHOD.md): the parts near each prototype's peak on its classes' test
// images, again under Gaussian noise N(0, noise_std^2) clipped to +-noise_clip added to the
// normalised image; a pair is stable when its part vector is unchanged element-wise (compare =
// "elementwise", today's reference) or has the same sum (compare = "sum", its first release, under
// which swapping one part for another counts as stable). Score = 100 x mean over prototypes of
// the stable fraction of their images. The reference's noise is unseeded; here it comes from
// `seed` and each image's index, so a run is reproducible and the realisation can be dumped.
#pragma once

#include <optional>

#include "part_hits.h"
#include "protoquant/localisation.h"
#include "protoquant/metric.h"
#include "protoquant/prototype_classes.h"

namespace protoquant::metrics {

struct NoiseSettings {
  double std = 0.2;
  double clip = 0.25;  // 0: unclipped (the first release)
  uint64_t seed = 0;
};

// The noise added to images B x c x H x W, samples `indices` (B) of the split.
torch::Tensor stability_noise(const NoiseSettings& noise, const torch::Tensor& images, const torch::Tensor& indices);

class Stability : public Metric {
 public:
  Stability(LocalisationSettings localisation, PrototypeClassRule classes, NoiseSettings noise, std::string compare,
            uint64_t chance_seed)
      : localisation_(localisation),
        rule_(std::move(classes)),
        noise_(noise),
        compare_(std::move(compare)),
        chance_seed_(chance_seed) {}
  static ParamSchema schema();

  MetricNeeds needs() const override {
    MetricNeeds n;
    n.similarity = n.parts = n.images = true;
    return n;
  }
  absl::Status begin(const EvalContext& context) override;
  absl::Status update(const EvalBatch& batch) override;
  absl::Status merge(const Metric& other) override;
  std::vector<torch::Tensor> partial_state() const override;
  absl::Status load_partial_state(const std::vector<torch::Tensor>& state) override;
  absl::StatusOr<nlohmann::json> compute() override;

 private:
  LocalisationSettings localisation_;
  PrototypeClassRule rule_;
  NoiseSettings noise_;
  std::string compare_;
  uint64_t chance_seed_;
  int64_t height_ = 0, width_ = 0;
  std::function<HeadOutput(const torch::Tensor&)> forward_;
  torch::Tensor classes_;  // P x C bool
  torch::Tensor stable_;   // P int64: stable pairs
  torch::Tensor pairs_;    // P int64: evaluated pairs
  torch::Tensor stable_chance_;  // P int64: stable pairs of the chance level
  std::optional<PeakGeometry> geometry_;
};

}  // namespace protoquant::metrics
