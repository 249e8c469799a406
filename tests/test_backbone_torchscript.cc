// The torchscript backbone on tiny modules scripted by tests/backbone_fixtures.py: ViT tokens
// (with and without a CLS token, square and wide grids, tensor and dict outputs) must become the
// grid that the module's own patch embedding computes in Python; tuple outputs and scripted heads.
#include <gtest/gtest.h>

#include "protoquant/build_context.h"
#include "test_support.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;
using testing::backbone_fixtures;
using testing::builtin_registry;
using testing::load_reference;
using testing::relative_error;

constexpr int64_t kScriptClasses = 10;

absl::StatusOr<std::shared_ptr<Backbone>> build_scripted(const std::string& module,
                                                         const std::map<std::string, ParamValue>& settings,
                                                         int64_t height = 16, int64_t width = 16) {
  const auto* entry = builtin_registry().backbones.find("torchscript");
  if (entry == nullptr) return absl::NotFoundError("no torchscript backbone");
  Params params = Params::defaults(entry->schema);
  params.set("path", (backbone_fixtures() / module).string());
  for (const auto& [key, value] : settings) params.set(key, value);
  BuildContext context;
  context.num_classes = kScriptClasses;
  context.image_channels = 3;
  context.image_height = height;
  context.image_width = width;
  return builtin_registry().backbones.build("torchscript", params, context);
}

void expect_grid(Backbone& backbone, const std::string& name) {
  const fs::path reference = backbone_fixtures() / (name + "_reference.pt");
  torch::NoGradGuard no_grad;
  const auto expected = load_reference(reference, "features");
  const auto features = backbone.features(load_reference(reference, "input"));
  ASSERT_EQ(features.sizes(), expected.sizes()) << name;
  EXPECT_LE(relative_error(features, expected), 1e-6) << name;
  EXPECT_EQ(backbone.channels(), expected.size(1)) << name;
}

TEST(BackboneTorchScript, VitTokensBecomeTheGridWithTheClsTokenDropped) {
  // vit_cls returns {"pooled", "tokens"} with 17 tokens: CLS + a 4 x 4 grid.
  for (const std::string cls : {"auto", "drop"}) {
    auto backbone = build_scripted("vit_cls.pt", {{"output", std::string("tokens")}, {"cls_token", cls}});
    ASSERT_TRUE(backbone.ok()) << backbone.status();
    expect_grid(**backbone, "vit_cls");
    // A token's receptive field is centred on its patch's middle, unless the manifest says.
    const BackboneGeometry geometry = (*backbone)->geometry();
    EXPECT_GT(geometry.patch_size, 0);
    EXPECT_DOUBLE_EQ(geometry.centre_offset, (geometry.patch_size - 1) / 2.0);
  }
  auto placed = build_scripted("vit_cls.pt", {{"output", std::string("tokens")}, {"centre_offset", std::vector<double>{1.0}}});
  ASSERT_TRUE(placed.ok()) << placed.status();
  EXPECT_DOUBLE_EQ((*placed)->geometry().centre_offset, 1.0);
  auto two = build_scripted("vit_cls.pt", {{"output", std::string("tokens")}, {"centre_offset", std::vector<double>{1.0, 2.0}}});
  ASSERT_FALSE(two.ok());
  EXPECT_NE(two.status().message().find("centre_offset takes one number"), std::string::npos) << two.status();
  // Keeping the CLS token leaves 17 tokens: no square grid, an error at build time.
  auto keep = build_scripted("vit_cls.pt", {{"output", std::string("tokens")}, {"cls_token", std::string("keep")}});
  ASSERT_FALSE(keep.ok());
  EXPECT_NE(keep.status().message().find("17 tokens do not form a square grid"), std::string::npos) << keep.status();
  auto no_key = build_scripted("vit_cls.pt", {});
  ASSERT_FALSE(no_key.ok());
  EXPECT_NE(no_key.status().message().find("is not one of its keys: pooled, tokens"), std::string::npos)
      << no_key.status();
}

TEST(BackboneTorchScript, VitTokensWithoutClsAndNonSquareGrids) {
  auto square = build_scripted("vit_nocls.pt", {});
  ASSERT_TRUE(square.ok()) << square.status();
  expect_grid(**square, "vit_nocls");
  // 16 x 32 images: CLS + 4 x 8 tokens; the grid must be given.
  auto wide = build_scripted("vit_wide.pt", {{"grid", std::vector<int64_t>{4, 8}}}, 16, 32);
  ASSERT_TRUE(wide.ok()) << wide.status();
  expect_grid(**wide, "vit_wide");
  auto unshaped = build_scripted("vit_wide.pt", {}, 16, 32);
  ASSERT_FALSE(unshaped.ok());
  EXPECT_NE(unshaped.status().message().find("33 tokens do not form a square grid"), std::string::npos)
      << unshaped.status();
}

TEST(BackboneTorchScript, TrainableLinearHeadAndFrozenScriptedModule) {
  auto backbone = build_scripted("vit_nocls.pt", {});
  ASSERT_TRUE(backbone.ok()) << backbone.status();
  // Only the head is an nn::Module parameter (the scripted module is frozen): D x C + C.
  int64_t count = 0;
  for (const auto& p : (*backbone)->parameters()) count += p.numel();
  EXPECT_EQ(count, 8 * kScriptClasses + kScriptClasses);
  (*backbone)->train();
  const auto images = torch::randn({3, 3, 16, 16});
  const auto features = (*backbone)->features(images);
  EXPECT_FALSE(features.requires_grad());
  const auto logits = (*backbone)->classify(features);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{3, kScriptClasses}));
  EXPECT_TRUE(logits.requires_grad());
}

TEST(BackboneTorchScript, TupleOutputAndScriptedHead) {
  auto backbone = build_scripted("cnn_tuple.pt", {{"output", std::string("1")},
                                                  {"head_path", (backbone_fixtures() / "head.pt").string()}});
  ASSERT_TRUE(backbone.ok()) << backbone.status();
  expect_grid(**backbone, "cnn_tuple");
  EXPECT_TRUE((*backbone)->parameters().empty());
  const fs::path reference = backbone_fixtures() / "cnn_tuple_reference.pt";
  torch::NoGradGuard no_grad;
  EXPECT_LE(relative_error((*backbone)->forward(load_reference(reference, "input")), load_reference(reference, "logits")),
            1e-6);

  auto first = build_scripted("cnn_tuple.pt", {});  // element 0 is the pooled B x D vector
  ASSERT_FALSE(first.ok());
  EXPECT_NE(first.status().message().find("expected tokens B x N x D, got shape [1, 6]"), std::string::npos)
      << first.status();
  auto wrong_channels = build_scripted("cnn_tuple.pt", {{"output", std::string("1")}, {"channels", int64_t{7}}});
  ASSERT_FALSE(wrong_channels.ok());
  EXPECT_NE(wrong_channels.status().message().find("channels = 7 but the feature map has D = 6"), std::string::npos)
      << wrong_channels.status();
  auto missing = build_scripted("nothing_here.pt", {});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("nothing_here.pt: no such file"), std::string::npos) << missing.status();
}

}  // namespace
}  // namespace protoquant
