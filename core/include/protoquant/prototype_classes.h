// Which classes a prototype belongs to. EvalProtoPNet's consistency and stability assume
// class-specific prototypes (prototype p belongs to class p // 10) and evaluate each on its
// class's test images. ProtoQuant's codewords are shared by classes, so the rule is a setting:
//   weight_above: every class c with W[c, p] > threshold (the default; shared prototypes);
//   relative:     every class c with W[c, p] > threshold x max_c W[c, p];
//   strongest:    the one class of largest W[c, p], when it exceeds threshold (class-specific).
// A prototype with no class is not evaluated; metrics report how many were.
#pragma once

#include <string>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "protoquant/params.h"

namespace protoquant {

struct PrototypeClassRule {
  std::string rule = "weight_above";
  double threshold = 0.1;

  nlohmann::json to_json() const { return {{"classes_rule", rule}, {"classes_threshold", threshold}}; }
};

ParamSchema prototype_classes_schema();
PrototypeClassRule prototype_class_rule(const Params& params);

// class_weights C x P -> P x C bool on the CPU.
torch::Tensor prototype_classes(const torch::Tensor& class_weights, const PrototypeClassRule& rule);

}  // namespace protoquant
