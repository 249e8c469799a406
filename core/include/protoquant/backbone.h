// A backbone is the frozen black box f plus its original classifier head g (METHOD.md, stage 0).
#pragma once

#include <cstdint>

#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/types.h>

namespace protoquant {

// Where a feature cell sits in the input image (timm's FeatureInfo.reduction, detectron2's
// ShapeSpec): what localisation, explanations and coherence checks read instead of guessing.
struct BackboneGeometry {
  int64_t stride = 0;           // input pixels between neighbouring feature cells (0: unknown)
  int64_t receptive_field = 0;  // side of the square of input pixels one cell sees (0: unknown)
  int64_t patch_size = 0;       // a ViT's patch side in input pixels; 0 for a CNN

  nlohmann::json to_json() const {
    return {{"stride", stride}, {"receptive_field", receptive_field}, {"patch_size", patch_size}};
  }
};

class Backbone : public torch::nn::Module {
 public:
  // images B x C x H x W (normalised) -> feature map Z, B x D x h x w. A ViT converts its tokens
  // to this grid here, so nothing downstream branches on the architecture.
  virtual torch::Tensor features(const torch::Tensor& images) = 0;
  // The original head g: feature map -> class logits. Stage 1 runs it on quantized maps.
  virtual torch::Tensor classify(const torch::Tensor& features) = 0;
  // D, the channel count of the feature map.
  virtual int64_t channels() const = 0;
  // The feature grid's placement in the input: stride, theoretical receptive field, patch size.
  virtual BackboneGeometry geometry() const = 0;

  torch::Tensor forward(const torch::Tensor& images) { return classify(features(images)); }
};

}  // namespace protoquant
