#include "convnext.h"

#include "geometry.h"

#include <array>

namespace protoquant::backbones {

namespace {

constexpr double kNormEps = 1e-6;
constexpr double kLayerScaleInit = 1e-6;
constexpr std::array<int64_t, 4> kDepths = {3, 3, 9, 3};
constexpr std::array<int64_t, 4> kDims = {96, 192, 384, 768};

torch::Tensor to_nhwc(torch::Tensor x) { return x.permute({0, 2, 3, 1}); }
torch::Tensor to_nchw(torch::Tensor x) { return x.permute({0, 3, 1, 2}); }

}  // namespace

LayerNormImpl::LayerNormImpl(int64_t channels) {
  weight_ = register_parameter("weight", torch::ones({channels}));
  bias_ = register_parameter("bias", torch::zeros({channels}));
}

torch::Tensor LayerNormImpl::forward(const torch::Tensor& x) {
  const auto input = x.scalar_type() == weight_.scalar_type() ? x : x.to(weight_.scalar_type());
  return torch::layer_norm(input, {weight_.size(0)}, weight_, bias_, kNormEps);
}

torch::Tensor LayerNorm2dImpl::forward(const torch::Tensor& x) { return to_nchw(LayerNormImpl::forward(to_nhwc(x))); }

ConvNextBlockImpl::ConvNextBlockImpl(int64_t dim, double drop_path) : drop_path_(drop_path) {
  block_ = register_module(
      "block",
      torch::nn::Sequential(
          torch::nn::Conv2d(torch::nn::Conv2dOptions(dim, dim, 7).padding(3).groups(dim)),
          torch::nn::Functional(to_nhwc),
          LayerNorm(dim),
          torch::nn::Linear(dim, 4 * dim), torch::nn::GELU(), torch::nn::Linear(4 * dim, dim),
          torch::nn::Functional(to_nchw)));
  layer_scale_ = register_parameter("layer_scale", torch::full({dim, 1, 1}, kLayerScaleInit));
}

torch::Tensor ConvNextBlockImpl::forward(const torch::Tensor& x) {
  auto y = layer_scale_ * block_->forward(x);
  if (is_training() && drop_path_ > 0.0) {
    const double keep = 1.0 - drop_path_;
    const auto mask = torch::empty({y.size(0), 1, 1, 1}, y.options()).bernoulli_(keep).div_(keep);
    y = y * mask;
  }
  return x + y;
}

ConvNext::ConvNext(int64_t in_channels, int64_t num_classes, double drop_path)
    : TorchvisionBackbone("convnext_tiny", "classifier", "classifier.2") {
  torch::nn::Sequential features;
  features->push_back(Stage(torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, kDims[0], 4).stride(4)),
                            LayerNorm2d(kDims[0])));
  const int64_t total_blocks = 18;
  // The 4/4 patchify stem, a 7x7 depthwise conv per block (its 1x1s add nothing) and a 2/2
  // downsampling conv between stages.
  GeometryBuilder geometry;
  geometry.layer(4, 4, 0);
  int64_t block_id = 0;
  for (size_t stage = 0; stage < kDepths.size(); ++stage) {
    Stage blocks;
    for (int64_t b = 0; b < kDepths[stage]; ++b, ++block_id) {
      blocks->push_back(ConvNextBlock(kDims[stage], drop_path * static_cast<double>(block_id) / (total_blocks - 1)));
      geometry.layer(7, 1, 3);
    }
    features->push_back(blocks);
    if (stage + 1 < kDepths.size()) {
      features->push_back(Stage(
          LayerNorm2d(kDims[stage]),
          torch::nn::Conv2d(torch::nn::Conv2dOptions(kDims[stage], kDims[stage + 1], 2).stride(2))));
      geometry.layer(2, 2, 0);
    }
  }
  features_ = register_module("features", features);
  channels_ = kDims.back();
  geometry_ = geometry.geometry();
  classifier_ = register_module("classifier", torch::nn::Sequential(LayerNorm2d(channels_), torch::nn::Flatten(),
                                                                     torch::nn::Linear(channels_, num_classes)));

  // torchvision's initialisation: N(0, 0.02) weights (its truncation at +-2 is 100 std away) and
  // zero biases for every convolution and linear layer.
  torch::NoGradGuard no_grad;
  for (auto& module : modules(/*include_self=*/false)) {
    if (auto* conv = module->as<torch::nn::Conv2d>()) {
      conv->weight.normal_(0.0, 0.02);
      conv->bias.zero_();
    } else if (auto* linear = module->as<torch::nn::Linear>()) {
      linear->weight.normal_(0.0, 0.02);
      linear->bias.zero_();
    }
  }
  use_channels_last();
}

torch::Tensor ConvNext::features(const torch::Tensor& images) {
  return features_->forward(images.contiguous(torch::MemoryFormat::ChannelsLast));
}

torch::Tensor ConvNext::classify(const torch::Tensor& features) {
  return classifier_->forward(features.mean({2, 3}, /*keepdim=*/true));
}

}  // namespace protoquant::backbones
