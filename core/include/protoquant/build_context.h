// What a factory may know about the rest of the experiment when it builds a component. The core
// fills it in stage order (dataset first, then backbone, quantizer, head), so every component
// gets the coherent numbers (classes, channels, prototypes) from upstream, never from the user.
#pragma once

#include <cstdint>
#include <string>

#include <torch/types.h>

namespace protoquant {

struct BuildContext {
  int64_t num_classes = 0;       // from the dataset
  int64_t image_channels = 0;    // from the dataset (1 grey, 3 RGB)
  int64_t image_height = 0;
  int64_t image_width = 0;
  int64_t feature_channels = 0;  // D, from the backbone: the quantizer and head work in R^D
  torch::Tensor prototypes;      // P x d, from the quantizer: what a prototype head starts from
  int64_t prototype_groups = 1;  // sub-spaces the prototypes split D into (pq); d = D / groups
  uint64_t seed = 0;
  torch::Device device = torch::kCPU;
  std::string base_dir;          // folder of the manifest: relative paths resolve against it
};

}  // namespace protoquant
