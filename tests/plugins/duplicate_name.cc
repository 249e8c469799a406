// Registers a backbone under a name the built-in plugin already uses.
#include "protoquant/plugin.h"

namespace {
absl::Status register_duplicate(protoquant::Registry& registry) {
  return registry.backbones.add({"small_cnn", "an impostor", {},
                                 [](const protoquant::Params&, const protoquant::BuildContext&)
                                     -> absl::StatusOr<std::shared_ptr<protoquant::Backbone>> {
                                   return absl::UnimplementedError("impostor");
                                 }});
}
}  // namespace

PROTOQUANT_PLUGIN(register_duplicate)
