#include "resnet.h"

#include "geometry.h"

#include <stdexcept>

#include <fmt/format.h>

namespace protoquant::backbones {

namespace {

constexpr int64_t kExpansion = 4;  // Bottleneck: out channels = 4 x planes

torch::nn::Conv2d resnet_conv(int64_t in, int64_t out, int64_t kernel, int64_t stride) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2).bias(false));
}

}  // namespace

ResidualBlockImpl::ResidualBlockImpl(int64_t in_channels, int64_t planes, int64_t stride, bool bottleneck) {
  const int64_t out_channels = bottleneck ? planes * kExpansion : planes;
  if (bottleneck) {
    conv1_ = register_module("conv1", resnet_conv(in_channels, planes, 1, 1));
    bn1_ = register_module("bn1", BatchNorm2d(planes));
    conv2_ = register_module("conv2", resnet_conv(planes, planes, 3, stride));
    bn2_ = register_module("bn2", BatchNorm2d(planes));
    conv3_ = register_module("conv3", resnet_conv(planes, out_channels, 1, 1));
    bn3_ = register_module("bn3", BatchNorm2d(out_channels));
  } else {
    conv1_ = register_module("conv1", resnet_conv(in_channels, planes, 3, stride));
    bn1_ = register_module("bn1", BatchNorm2d(planes));
    conv2_ = register_module("conv2", resnet_conv(planes, planes, 3, 1));
    bn2_ = register_module("bn2", BatchNorm2d(planes));
  }
  if (stride != 1 || in_channels != out_channels) {
    downsample_ = register_module("downsample", torch::nn::Sequential(resnet_conv(in_channels, out_channels, 1, stride),
                                                                      BatchNorm2d(out_channels)));
  }
}

torch::Tensor ResidualBlockImpl::forward(const torch::Tensor& x) {
  auto y = bn1_->forward(conv1_->forward(x)).relu_();
  y = bn2_->forward(conv2_->forward(y));
  if (conv3_) y = bn3_->forward(conv3_->forward(y.relu_()));
  const auto identity = downsample_ ? downsample_->forward(x) : x;
  return (y + identity).relu_();
}

ResNetConfig resnet_config(const std::string& arch) {
  if (arch == "resnet18") return {{2, 2, 2, 2}, false};
  if (arch == "resnet34") return {{3, 4, 6, 3}, false};
  if (arch == "resnet50") return {{3, 4, 6, 3}, true};
  throw std::out_of_range("no resnet named " + arch);
}

ResNet::ResNet(const std::string& arch, int64_t in_channels, int64_t num_classes)
    : TorchvisionBackbone(arch, "fc", "fc") {
  const ResNetConfig config = resnet_config(arch);
  // The stem (conv 7/2, max-pool 3/2), then each block's longest path: a BasicBlock's two 3x3
  // convs (the first strides), a Bottleneck's 3x3 (it strides; the 1x1s add nothing). Every layer
  // is padded by half its kernel, so cell r is centred on input pixel 32 r: its cell's top-left
  // corner, not the middle of its 32-pixel block.
  GeometryBuilder geometry;
  geometry.layer(7, 2, 3).layer(3, 2, 1);
  conv1_ = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, 64, 7).stride(2).padding(3).bias(false)));
  bn1_ = register_module("bn1", BatchNorm2d(64));
  int64_t channels = 64;
  for (size_t stage = 0; stage < config.blocks.size(); ++stage) {
    const int64_t planes = int64_t{64} << stage;
    torch::nn::Sequential layer;
    for (int64_t b = 0; b < config.blocks[stage]; ++b) {
      const int64_t stride = (stage > 0 && b == 0) ? 2 : 1;
      layer->push_back(ResidualBlock(channels, planes, stride, config.bottleneck));
      geometry.layer(3, stride, 1);
      if (!config.bottleneck) geometry.layer(3, 1, 1);
      channels = config.bottleneck ? planes * kExpansion : planes;
    }
    layers_.push_back(register_module(fmt::format("layer{}", stage + 1), layer));
  }
  channels_ = channels;
  geometry_ = geometry.geometry();
  fc_ = register_module("fc", torch::nn::Linear(channels_, num_classes));

  // torchvision's initialisation: He (fan_out) for convolutions, BN at identity.
  torch::NoGradGuard no_grad;
  for (auto& module : modules(/*include_self=*/false)) {
    if (auto* conv = module->as<torch::nn::Conv2d>()) {
      torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
    }
  }
  use_channels_last();
}

torch::Tensor ResNet::features(const torch::Tensor& images) {
  auto x = bn1_->forward(conv1_->forward(images.contiguous(torch::MemoryFormat::ChannelsLast))).relu_();
  x = torch::max_pool2d(x, 3, 2, 1);
  for (auto& layer : layers_) x = layer->forward(x);
  return x;
}

torch::Tensor ResNet::classify(const torch::Tensor& features) { return fc_->forward(features.mean({2, 3})); }

}  // namespace protoquant::backbones
