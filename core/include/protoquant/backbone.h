// A backbone is the frozen black box f plus its original classifier head g (METHOD.md, stage 0).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

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
  // The input pixel (pixel centres at integers) on which cell 0's receptive field is centred;
  // cell r's is centre_offset + r * stride. It follows from the paddings, so it is not the middle
  // of the cell's stride block in general (ResNet's padded layers centre cell r on pixel 32 r).
  // NaN: unknown.
  double centre_offset = std::numeric_limits<double>::quiet_NaN();

  bool knows_centres() const { return stride > 0 && std::isfinite(centre_offset); }
  // The receptive-field centre of cell `cell` along one axis, in input pixels.
  double centre(int64_t cell) const { return centre_offset + static_cast<double>(cell * stride); }

  nlohmann::json to_json() const {
    nlohmann::json json = {{"stride", stride}, {"receptive_field", receptive_field}, {"patch_size", patch_size}};
    json["centre_offset"] = std::isfinite(centre_offset) ? nlohmann::json(centre_offset) : nlohmann::json(nullptr);
    return json;
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
