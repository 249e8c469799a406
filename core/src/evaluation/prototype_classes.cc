#include "protoquant/prototype_classes.h"

#include <torch/torch.h>

namespace protoquant {

ParamSchema prototype_classes_schema() {
  return ParamSchema{
      ParamSpec::String("classes_rule", "weight_above",
                        "a prototype's classes: weight_above (W > threshold), relative (W > threshold x its "
                        "largest weight) or strongest (its largest-weight class only)")
          .one_of({"weight_above", "relative", "strongest"}),
      ParamSpec::Float("classes_threshold", 0.1, "the threshold of classes_rule").min(0),
  };
}

PrototypeClassRule prototype_class_rule(const Params& params) {
  return {params.get_string("classes_rule"), params.get_float("classes_threshold")};
}

torch::Tensor prototype_classes(const torch::Tensor& class_weights, const PrototypeClassRule& rule) {
  const torch::Tensor w = class_weights.detach().to(torch::kCPU, torch::kFloat32).t();  // P x C
  if (rule.rule == "relative") {
    const torch::Tensor strongest = std::get<0>(w.max(1, /*keepdim=*/true));
    return (w > strongest * rule.threshold) & (strongest > 0);
  }
  if (rule.rule == "strongest") {
    const auto [value, index] = w.max(1);
    torch::Tensor out = torch::zeros_like(w, torch::kBool);
    out.scatter_(1, index.unsqueeze(1), (value > rule.threshold).unsqueeze(1));
    return out;
  }
  return w > rule.threshold;
}

}  // namespace protoquant
