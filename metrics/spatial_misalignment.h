// spatial_misalignment (Sacha et al., AAAI 2024; METHOD.md): how much a prototype's activation
// depends on pixels outside the region it points at. Target = the image's most activated
// prototype; its similarity map, upsampled (bicubic), thresholded at its `quantile` (0.95), gives
// a tight box grown by `margin` (10 px): the protected region. An L-inf PGD attack changes only
// pixels outside it, in normalised pixel space (eps 0.4, step 0.01, 40 iterations, random start),
// minimising the target's activation. Values (lower is better):
//   PAC = 100 x (1 - activation after / before), averaged over the images;
//   PRC = the increase in non-ground-truth-class prototypes ranked above the target;
//   PLC = 100 x (1 - IoU) of the target's regions above the `plc_quantile` (0.9) quantile before
//         and after (bilinear upsampling, as the benchmark);
//   AC  = accuracy before minus after, in points.
// The published benchmark's attack feeds one logit to a cross-entropy, which is identically zero:
// its PGD never steps and only adds its random start. attack = "pgd" runs the attack the paper
// describes; attack = "random_start" reproduces the published numbers' behaviour.
#pragma once

#include "protoquant/localisation.h"
#include "protoquant/metric.h"
#include "protoquant/prototype_classes.h"

namespace protoquant::metrics {

struct AttackSettings {
  std::string attack = "pgd";  // pgd, random_start
  double epsilon = 0.4, step = 0.01;
  int64_t iterations = 40;
  double quantile = 0.95, plc_quantile = 0.9;
  int64_t margin = 10;
  std::string activation = "presence";  // presence (the head's a[b,p]) or similarity (max of S)
  uint64_t seed = 0;
  std::string dtype = "fp32";  // the attack's gradient steps: fp32, or bf16 (CPU autocast; AMX)
};

class SpatialMisalignment : public Metric {
 public:
  SpatialMisalignment(AttackSettings attack, PrototypeClassRule classes) : attack_(std::move(attack)), rule_(std::move(classes)) {}
  static ParamSchema schema();

  MetricNeeds needs() const override {
    MetricNeeds n;
    n.similarity = n.images = true;
    return n;
  }
  absl::Status begin(const EvalContext& context) override;
  absl::Status update(const EvalBatch& batch) override;
  absl::Status merge(const Metric& other) override;
  std::vector<torch::Tensor> partial_state() const override;
  absl::Status load_partial_state(const std::vector<torch::Tensor>& state) override;
  absl::StatusOr<nlohmann::json> compute() override;

 private:
  AttackSettings attack_;
  PrototypeClassRule rule_;
  int64_t height_ = 0, width_ = 0;
  std::function<HeadOutput(const torch::Tensor&)> forward_;
  torch::Tensor classes_;  // P x C bool
  int64_t images_ = 0;
  double pac_ = 0, prc_ = 0, plc_ = 0;
  int64_t correct_before_ = 0, correct_after_ = 0;
};

}  // namespace protoquant::metrics
