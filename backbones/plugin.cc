// The built-in backbone plugin.
#include <fmt/format.h>

#include "convnext.h"
#include "protoquant/plugin.h"
#include "resnet.h"
#include "small_cnn.h"
#include "torchscript_backbone.h"

namespace protoquant::backbones {

namespace {

absl::Status need_classes(const BuildContext& c, const std::string& name) {
  if (c.num_classes < 1) return absl::InvalidArgumentError(fmt::format("{} needs a dataset with classes", name));
  return absl::OkStatus();
}

absl::Status add_resnet(Registry& registry, const std::string& arch, const std::string& summary) {
  return registry.backbones.add(
      {arch, summary, torchvision_schema(),
       [arch](const Params& p, const BuildContext& c) -> absl::StatusOr<std::shared_ptr<Backbone>> {
         PQ_RETURN_IF_ERROR(need_classes(c, arch));
         auto backbone = std::make_shared<ResNet>(arch, c.image_channels, c.num_classes);
         PQ_RETURN_IF_ERROR(configure(*backbone, p));
         return backbone;
       }});
}

}  // namespace

absl::Status register_backbones(Registry& registry) {
  PQ_RETURN_IF_ERROR(registry.backbones.add(
      {"small_cnn",
       "7-layer CNN (6x conv3x3-BN-ReLU, 2 max-pools) + avgpool/linear head; D = 4 * width",
       ParamSchema{ParamSpec::Int("width", 32, "channels of the first block (D = 4 * width)").range(1, 1024)},
       [](const Params& p, const BuildContext& c) -> absl::StatusOr<std::shared_ptr<Backbone>> {
         PQ_RETURN_IF_ERROR(need_classes(c, "small_cnn"));
         return std::make_shared<SmallCnn>(c.image_channels, p.get_int("width"), c.num_classes);
       }}));
  PQ_RETURN_IF_ERROR(add_resnet(registry, "resnet18", "ResNet-18 (torchvision names) + avgpool/fc head; Z = layer4, D = 512"));
  PQ_RETURN_IF_ERROR(add_resnet(registry, "resnet34", "ResNet-34 (torchvision names) + avgpool/fc head; Z = layer4, D = 512"));
  PQ_RETURN_IF_ERROR(add_resnet(registry, "resnet50", "ResNet-50 v1.5 (torchvision names) + avgpool/fc head; Z = layer4, D = 2048"));
  PQ_RETURN_IF_ERROR(registry.backbones.add(
      {"convnext_tiny",
       "ConvNeXt-T (torchvision names) + avgpool/LayerNorm2d/linear head; Z = last stage before the norm, D = 768",
       ParamSchema(torchvision_schema())
           .add(ParamSpec::Float("drop_path", 0.1, "stochastic depth rate of the last block (training only)")
                    .range(0.0, 0.99)),
       [](const Params& p, const BuildContext& c) -> absl::StatusOr<std::shared_ptr<Backbone>> {
         PQ_RETURN_IF_ERROR(need_classes(c, "convnext_tiny"));
         auto backbone = std::make_shared<ConvNext>(c.image_channels, c.num_classes, p.get_float("drop_path"));
         PQ_RETURN_IF_ERROR(configure(*backbone, p));
         return backbone;
       }}));
  return registry.backbones.add({"torchscript",
                                 "any TorchScript module (torch.jit.save) as f; ViT tokens become a grid; "
                                 "g = trainable avgpool + linear, or a scripted head",
                                 torchscript_schema(), build_torchscript_backbone});
}

}  // namespace protoquant::backbones

PROTOQUANT_PLUGIN(protoquant::backbones::register_backbones)
