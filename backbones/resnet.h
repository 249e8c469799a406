// ResNet-18/34/50 (He et al. 2016; v1.5: a Bottleneck strides in its 3x3 conv) with torchvision's
// parameter names, so torchvision's and timm's weights load unchanged. Z is layer4's output
// (B x 512 x H/32 x W/32, or B x 2048 for resnet50); g is the original head: avgpool + fc.
#pragma once

#include <string>
#include <vector>

#include <torch/torch.h>

#include "protoquant/batch_norm.h"
#include "torchvision_backbone.h"

namespace protoquant::backbones {

// A residual block: BasicBlock (two 3x3 convs) or Bottleneck (1x1, 3x3 with the stride, 1x1 to
// 4 x planes). Children conv1, bn1, conv2, bn2[, conv3, bn3][, downsample.{0,1}] as in torchvision.
class ResidualBlockImpl : public torch::nn::Module {
 public:
  ResidualBlockImpl(int64_t in_channels, int64_t planes, int64_t stride, bool bottleneck);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr};
  BatchNorm2d bn1_{nullptr}, bn2_{nullptr}, bn3_{nullptr};
  torch::nn::Sequential downsample_{nullptr};
};
TORCH_MODULE(ResidualBlock);

struct ResNetConfig {
  std::vector<int64_t> blocks;  // per stage
  bool bottleneck = false;
};
// resnet18, resnet34, resnet50; throws std::out_of_range for another name.
ResNetConfig resnet_config(const std::string& arch);

class ResNet : public TorchvisionBackbone {
 public:
  ResNet(const std::string& arch, int64_t in_channels, int64_t num_classes);

  torch::Tensor features(const torch::Tensor& images) override;
  torch::Tensor classify(const torch::Tensor& features) override;
  int64_t channels() const override { return channels_; }
  BackboneGeometry geometry() const override { return geometry_; }

 private:
  int64_t channels_ = 0;
  BackboneGeometry geometry_;
  torch::nn::Conv2d conv1_{nullptr};
  BatchNorm2d bn1_{nullptr};
  std::vector<torch::nn::Sequential> layers_;
  torch::nn::Linear fc_{nullptr};
};

}  // namespace protoquant::backbones
