#include "small_cnn.h"

#include "geometry.h"

namespace protoquant::backbones {

namespace {
void conv_bn_relu(torch::nn::Sequential& body, int64_t in, int64_t out) {
  body->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1).bias(false)));
  body->push_back(BatchNorm2d(out));
  body->push_back(torch::nn::ReLU(torch::nn::ReLUOptions(true)));
}
}  // namespace

SmallCnn::SmallCnn(int64_t in_channels, int64_t width, int64_t num_classes) : channels_(4 * width) {
  torch::nn::Sequential body;
  conv_bn_relu(body, in_channels, width);
  conv_bn_relu(body, width, width);
  body->push_back(torch::nn::MaxPool2d(2));
  conv_bn_relu(body, width, 2 * width);
  conv_bn_relu(body, 2 * width, 2 * width);
  body->push_back(torch::nn::MaxPool2d(2));
  conv_bn_relu(body, 2 * width, 4 * width);
  conv_bn_relu(body, 4 * width, 4 * width);
  body_ = register_module("body", body);
  fc_ = register_module("fc", torch::nn::Linear(channels_, num_classes));
  // Channels-last (NHWC) lets oneDNN run its fast convolution kernels: measured 2-4x faster than
  // NCHW for training here. Its feature maps also reshape to (B*H*W) x D without a copy.
  torch::NoGradGuard no_grad;
  for (auto& p : parameters()) {
    if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
  }
}

torch::Tensor SmallCnn::features(const torch::Tensor& images) {
  return body_->forward(images.contiguous(torch::MemoryFormat::ChannelsLast));
}

BackboneGeometry SmallCnn::geometry() const {
  // conv3, conv3, pool2, conv3, conv3, pool2, conv3, conv3 (the convs padded by 1, the pools not):
  // stride 4, receptive field 32, cell r centred on input pixel 4 r + 1.5.
  GeometryBuilder geometry;
  for (int block = 0; block < 3; ++block) {
    geometry.layer(3, 1, 1).layer(3, 1, 1);
    if (block < 2) geometry.layer(2, 2, 0);
  }
  return geometry.geometry();
}

torch::Tensor SmallCnn::classify(const torch::Tensor& features) {
  return fc_->forward(features.mean({2, 3}));
}

}  // namespace protoquant::backbones
