// The receptive field, stride and receptive-field centres of a chain of convolutions and pools,
// layer by layer (Araujo et al., "Computing receptive fields of convolutional neural networks",
// Distill 2019): each layer of kernel k, stride s and padding p widens the field by (k - 1) x the
// current stride, moves the first cell's centre by ((k - 1) / 2 - p) x the current stride, then
// multiplies the stride by s. Along a residual block the longest path counts; its shortcut is
// never wider and, padded the same way, centred the same.
#pragma once

#include <cstdint>

#include "protoquant/backbone.h"

namespace protoquant::backbones {

class GeometryBuilder {
 public:
  GeometryBuilder& layer(int64_t kernel, int64_t stride, int64_t padding) {
    receptive_field_ += (kernel - 1) * stride_;
    centre_offset_ += (static_cast<double>(kernel - 1) / 2.0 - static_cast<double>(padding)) * static_cast<double>(stride_);
    stride_ *= stride;
    return *this;
  }
  BackboneGeometry geometry() const { return {stride_, receptive_field_, 0, centre_offset_}; }

 private:
  int64_t receptive_field_ = 1;
  int64_t stride_ = 1;
  double centre_offset_ = 0.0;
};

}  // namespace protoquant::backbones
