// The built-in backbone plugin.
#include "protoquant/plugin.h"
#include "small_cnn.h"

namespace protoquant::backbones {

absl::Status register_backbones(Registry& registry) {
  return registry.backbones.add(
      {"small_cnn",
       "7-layer CNN (6x conv3x3-BN-ReLU, 2 max-pools) + avgpool/linear head; D = 4 * width",
       ParamSchema{ParamSpec::Int("width", 32, "channels of the first block (D = 4 * width)").range(1, 1024)},
       [](const Params& p, const BuildContext& c) -> absl::StatusOr<std::shared_ptr<Backbone>> {
         if (c.num_classes < 1) return absl::InvalidArgumentError("small_cnn needs a dataset with classes");
         return std::make_shared<SmallCnn>(c.image_channels, p.get_int("width"), c.num_classes);
       }});
}

}  // namespace protoquant::backbones

PROTOQUANT_PLUGIN(protoquant::backbones::register_backbones)
