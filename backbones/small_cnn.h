// small_cnn: a 7-layer VGG-style CNN (six 3x3 conv-BN-ReLU layers, two max-pools, then global
// average pool + linear as the original head g). The black box the toolkit trains itself on
// small data such as Fashion-MNIST (stage 0).
#pragma once

#include <torch/torch.h>

#include "protoquant/backbone.h"
#include "protoquant/batch_norm.h"

namespace protoquant::backbones {

class SmallCnn : public Backbone {
 public:
  SmallCnn(int64_t in_channels, int64_t width, int64_t num_classes);

  torch::Tensor features(const torch::Tensor& images) override;
  torch::Tensor classify(const torch::Tensor& features) override;
  int64_t channels() const override { return channels_; }
  BackboneGeometry geometry() const override;

 private:
  int64_t channels_;
  torch::nn::Sequential body_{nullptr};
  torch::nn::Linear fc_{nullptr};
};

}  // namespace protoquant::backbones
