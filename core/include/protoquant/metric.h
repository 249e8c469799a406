// An evaluation metric. The core runs the model once over the evaluation split and hands every
// metric the predictions; metrics that need more (part locations, perturbations) use the model
// and the dataset in the context.
#pragma once

#include <string>

#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "protoquant/dataset.h"
#include "protoquant/model.h"

namespace protoquant {

struct EvalContext {
  std::string split;              // the evaluated split, e.g. "test"
  torch::Tensor labels;           // N int64
  torch::Tensor logits;           // N x C, the interpretable model
  torch::Tensor blackbox_logits;  // N x C, the stage-0 classifier; undefined if not available
  Model* model = nullptr;
  Dataset* dataset = nullptr;
  torch::Device device = torch::kCPU;
  std::string run_dir;
};

class Metric {
 public:
  virtual ~Metric() = default;
  // Named values (flat numbers under "values") plus the settings used (under "settings").
  virtual absl::StatusOr<nlohmann::json> evaluate(const EvalContext& context) = 0;
};

}  // namespace protoquant
