// The plugin's tests: the library loads through the same loader `protoquant` uses, passes the
// SDK's conformance suite, and computes what the plugin promises.
#include <gtest/gtest.h>

#include "protoquant/conformance.h"
#include "protoquant/plugin_loader.h"

namespace {

TEST(MyPlugin, PassesTheConformanceSuite) {
  protoquant::Registry registry;
  const absl::Status loaded = protoquant::load_plugin(MY_PLUGIN_LIBRARY, registry);
  ASSERT_TRUE(loaded.ok()) << loaded;
  ASSERT_NE(registry.backbones.find("my_backbone"), nullptr);
  for (const auto& check : protoquant::check_component(registry, "backbone", "my_backbone")) {
    EXPECT_FALSE(check.failed()) << check.line();
  }
}

TEST(MyPlugin, FeaturesAreAQuarterOfTheImage) {
  protoquant::Registry registry;
  ASSERT_TRUE(protoquant::load_plugin(MY_PLUGIN_LIBRARY, registry).ok());
  protoquant::BuildContext context;
  context.image_channels = 3;
  context.num_classes = 5;
  const auto* entry = registry.backbones.find("my_backbone");
  auto backbone = registry.backbones.build("my_backbone", protoquant::Params::defaults(entry->schema), context);
  ASSERT_TRUE(backbone.ok()) << backbone.status();
  const torch::Tensor features = (*backbone)->features(torch::randn({2, 3, 32, 32}));
  EXPECT_EQ(features.sizes(), (std::vector<int64_t>{2, 32, 8, 8}));
  EXPECT_EQ((*backbone)->classify(features).sizes(), (std::vector<int64_t>{2, 5}));
  // The factory's own check: without the dataset's numbers it refuses, with a Status.
  EXPECT_FALSE(registry.backbones.build("my_backbone", protoquant::Params::defaults(entry->schema), {}).ok());
}

}  // namespace
