// How many prototypes a model uses (METHOD.md stage 4 and the PIP-Net size metrics), from its
// non-negative class weights W (C x P).
#pragma once

#include <torch/types.h>

namespace protoquant {

struct ModelSize {
  double local_size = 0.0;   // mean over classes of the prototypes with weight > local_threshold
  int64_t global_size = 0;   // prototypes with any class weight > global_threshold
  double sparsity = 0.0;     // fraction of weights <= global_threshold
};

ModelSize model_size(const torch::Tensor& class_weights, double local_threshold = 0.1,
                     double global_threshold = 1e-3);

}  // namespace protoquant
