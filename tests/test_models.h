// Small models with known behaviour, for the metric and explanation tests: a fixed random conv
// backbone (stride 1), a cosine-similarity head over given prototypes and class weights, and a
// backbone that can see the image shifted (an activation moved off its evidence).
#pragma once

#include <torch/torch.h>

#include "protoquant/backbone.h"
#include "protoquant/head.h"

namespace protoquant::testing {

// Features = ReLU of a fixed random 3x3 convolution (stride 1): the map is the image's size.
class ConvBackbone : public Backbone {
 public:
  ConvBackbone() { conv_ = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1))); }
  torch::Tensor features(const torch::Tensor& images) override { return torch::relu(conv_->forward(images)); }
  torch::Tensor classify(const torch::Tensor& features) override { return features.mean({2, 3}); }
  int64_t channels() const override { return 8; }
  BackboneGeometry geometry() const override { return {1, 3, 0}; }

 private:
  torch::nn::Conv2d conv_{nullptr};
};

// Cosine similarity to fixed prototypes, presence = the map's max, logits = presence W^T.
class CosineHead : public Head {
 public:
  CosineHead(torch::Tensor prototypes, torch::Tensor weights) : prototypes_(prototypes), weights_(weights) {}
  HeadOutput forward(const torch::Tensor& features) override {
    namespace F = torch::nn::functional;
    const torch::Tensor z = F::normalize(features, F::NormalizeFuncOptions().dim(1).eps(1e-6));
    const torch::Tensor e = F::normalize(prototypes_, F::NormalizeFuncOptions().dim(1).eps(1e-6));
    HeadOutput out;
    out.similarity = torch::einsum("bdhw,pd->bphw", {z, e});
    out.presence = std::get<0>(out.similarity.flatten(2).max(2));
    out.logits = out.presence.matmul(weights_.t());
    return out;
  }
  torch::Tensor class_weights() const override { return weights_; }
  torch::Tensor prototypes() const override { return prototypes_; }

 private:
  torch::Tensor prototypes_, weights_;
};

class SquareBackbone : public Backbone {
 public:
  explicit SquareBackbone(int64_t shift) : shift_(shift) {
    conv_ = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1).bias(false)));
    torch::NoGradGuard no_grad;
    conv_->weight.normal_(0.0, 1.0);
    for (auto& p : parameters()) p.set_requires_grad(false);
  }
  torch::Tensor features(const torch::Tensor& images) override {
    return unshifted(shift_ == 0 ? images : torch::roll(images, {-shift_, -shift_}, {2, 3}));
  }
  torch::Tensor unshifted(const torch::Tensor& images) { return torch::relu(conv_->forward(images)); }
  torch::Tensor classify(const torch::Tensor& features) override { return features.mean({2, 3}); }
  int64_t channels() const override { return 8; }
  BackboneGeometry geometry() const override { return {1, 3, 0}; }

 private:
  int64_t shift_;
  torch::nn::Conv2d conv_{nullptr};
};

}  // namespace protoquant::testing
