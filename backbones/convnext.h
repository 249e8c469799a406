// ConvNeXt-T (Liu et al. 2022) with torchvision's parameter names: a 4x4/4 patchify stem, stages
// of [3, 3, 9, 3] blocks of widths [96, 192, 384, 768] with LayerNorm + 2x2/2 conv downsampling.
// Z is the last stage's output before the final norm (B x 768 x H/32 x W/32); g is torchvision's
// `classifier` after global average pooling: LayerNorm2d + flatten + linear.
#pragma once

#include <vector>

#include <torch/torch.h>

#include "torchvision_backbone.h"

namespace protoquant::backbones {

// LayerNorm over the last dimension (eps 1e-6), computed in its weights' dtype: under bf16
// autocast its input arrives in bf16 and LibTorch 1.13's layer_norm refuses bf16 input with fp32
// weights (autocast does not cast it), so the input is widened, as autocast's fp32 ops do. The
// output stays fp32; the next convolution or linear layer takes it to bf16 again.
class LayerNormImpl : public torch::nn::Module {
 public:
  explicit LayerNormImpl(int64_t channels);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::Tensor weight_, bias_;
};
TORCH_MODULE(LayerNorm);

// LayerNorm over the channels of a B x C x H x W map (as torchvision's LayerNorm2d).
class LayerNorm2dImpl : public LayerNormImpl {
 public:
  using LayerNormImpl::LayerNormImpl;
  torch::Tensor forward(const torch::Tensor& x);
};
TORCH_MODULE(LayerNorm2d);

// dwconv 7x7 -> NHWC -> LayerNorm -> Linear 4C -> GELU -> Linear C -> NCHW, scaled per channel by
// layer_scale (C x 1 x 1), stochastic depth ("row" mode: whole samples), residual. Children
// block.{0,2,3,5} and layer_scale as in torchvision's CNBlock.
class ConvNextBlockImpl : public torch::nn::Module {
 public:
  ConvNextBlockImpl(int64_t dim, double drop_path);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::nn::Sequential block_{nullptr};
  torch::Tensor layer_scale_;
  double drop_path_;
};
TORCH_MODULE(ConvNextBlock);

// A Sequential with a plain forward(Tensor), so it can sit inside another Sequential (LibTorch's
// AnyModule cannot hold Sequential's templated forward). Children are named 0, 1, ... as in torchvision.
class StageImpl : public torch::nn::SequentialImpl {
 public:
  using SequentialImpl::SequentialImpl;
  torch::Tensor forward(const torch::Tensor& x) { return SequentialImpl::forward(x); }
};
TORCH_MODULE(Stage);

class ConvNext : public TorchvisionBackbone {
 public:
  // `drop_path`: the last block's stochastic-depth rate; earlier blocks scale linearly from 0.
  ConvNext(int64_t in_channels, int64_t num_classes, double drop_path);

  torch::Tensor features(const torch::Tensor& images) override;
  torch::Tensor classify(const torch::Tensor& features) override;
  int64_t channels() const override { return channels_; }
  BackboneGeometry geometry() const override { return geometry_; }

 private:
  int64_t channels_ = 0;
  BackboneGeometry geometry_;
  torch::nn::Sequential features_{nullptr}, classifier_{nullptr};
};

}  // namespace protoquant::backbones
