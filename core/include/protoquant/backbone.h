// A backbone is the frozen black box f plus its original classifier head g (METHOD.md, stage 0).
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

namespace protoquant {

class Backbone : public torch::nn::Module {
 public:
  // images B x C x H x W (normalised) -> feature map Z, B x D x h x w. A ViT converts its tokens
  // to this grid here, so nothing downstream branches on the architecture.
  virtual torch::Tensor features(const torch::Tensor& images) = 0;
  // The original head g: feature map -> class logits. Stage 1 runs it on quantized maps.
  virtual torch::Tensor classify(const torch::Tensor& features) = 0;
  // D, the channel count of the feature map.
  virtual int64_t channels() const = 0;

  torch::Tensor forward(const torch::Tensor& images) { return classify(features(images)); }
};

}  // namespace protoquant
