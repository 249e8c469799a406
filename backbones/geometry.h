// The receptive field and stride of a chain of convolutions and pools, layer by layer (Araujo et
// al., "Computing receptive fields of convolutional neural networks", Distill 2019): each layer
// of kernel k and stride s widens the field by (k - 1) x the current stride, then multiplies the
// stride by s. Along a residual block the longest path counts; its shortcut is never wider.
#pragma once

#include <cstdint>

#include "protoquant/backbone.h"

namespace protoquant::backbones {

class GeometryBuilder {
 public:
  GeometryBuilder& layer(int64_t kernel, int64_t stride = 1) {
    receptive_field_ += (kernel - 1) * stride_;
    stride_ *= stride;
    return *this;
  }
  BackboneGeometry geometry() const { return {stride_, receptive_field_, 0}; }

 private:
  int64_t receptive_field_ = 1;
  int64_t stride_ = 1;
};

}  // namespace protoquant::backbones
