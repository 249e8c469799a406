// The template's one component: a small convolutional backbone (two stride-2 convolutions and a
// linear head g over average-pooled features). Replace it with yours; keep the shape of the file:
// the class, a factory that validates what the schema cannot, and PROTOQUANT_PLUGIN once.
#include <fmt/format.h>
#include <torch/torch.h>

#include "protoquant/plugin.h"

namespace my_plugin {

class MyBackbone : public protoquant::Backbone {
 public:
  MyBackbone(int64_t in_channels, int64_t width, int64_t classes) : width_(width) {
    conv1_ = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, width, 3).stride(2).padding(1)));
    conv2_ = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(width, width, 3).stride(2).padding(1)));
    g_ = register_module("g", torch::nn::Linear(width, classes));
  }
  // B x C x H x W images -> B x width x H/4 x W/4 features.
  torch::Tensor features(const torch::Tensor& images) override {
    return torch::relu(conv2_->forward(torch::relu(conv1_->forward(images))));
  }
  // The black box's own head g: features -> logits.
  torch::Tensor classify(const torch::Tensor& features) override { return g_->forward(features.mean({2, 3})); }
  int64_t channels() const override { return width_; }
  // Two stride-2 3 x 3 convolutions: stride 4, receptive field 3 + 2 * 2 = 7.
  protoquant::BackboneGeometry geometry() const override { return {4, 7, 0}; }

 private:
  int64_t width_;
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::Linear g_{nullptr};
};

absl::Status register_components(protoquant::Registry& registry) {
  return registry.backbones.add(
      {"my_backbone", "the plugin template's small CNN (rename me)",
       protoquant::ParamSchema{protoquant::ParamSpec::Int("width", 32, "feature channels D").range(1, 4096)},
       [](const protoquant::Params& p, const protoquant::BuildContext& c)
           -> absl::StatusOr<std::shared_ptr<protoquant::Backbone>> {
         if (c.image_channels < 1 || c.num_classes < 1) {
           return absl::InvalidArgumentError("my_backbone needs the dataset's channels and classes");
         }
         return std::make_shared<MyBackbone>(c.image_channels, p.get_int("width"), c.num_classes);
       }});
}

}  // namespace my_plugin

PROTOQUANT_PLUGIN(my_plugin::register_components)
