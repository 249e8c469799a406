// The torchvision-style backbones against torchvision itself: tests/backbone_fixtures.py builds
// each model with random weights (random BN statistics, layer scales), exports them with
// tools/export_backbone.py, and records torchvision's features and logits in eval mode; the C++
// backbone, built through the registry, must reproduce them to 1e-4 relative error.
#include <iostream>

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

constexpr int64_t kClasses = 10;  // the fixtures' head
constexpr double kTolerance = 1e-4;

BuildContext image_context(int64_t classes, int64_t size = 64) {
  BuildContext context;
  context.num_classes = classes;
  context.image_channels = 3;
  context.image_height = size;
  context.image_width = size;
  return context;
}

absl::StatusOr<std::shared_ptr<Backbone>> build(const std::string& arch, const std::string& weights,
                                                const std::string& head = "auto", int64_t classes = kClasses) {
  const auto* entry = builtin_registry().backbones.find(arch);
  if (entry == nullptr) return absl::NotFoundError("no backbone " + arch);
  Params params = Params::defaults(entry->schema);
  params.set("weights", weights);
  params.set("head", head);
  return builtin_registry().backbones.build(arch, params, image_context(classes));
}

class BackboneParity : public ::testing::TestWithParam<std::string> {};

TEST_P(BackboneParity, FeaturesAndLogitsMatchTorchvisionInEvalMode) {
  const std::string arch = GetParam();
  const fs::path fixtures = backbone_fixtures();
  const fs::path reference = fixtures / (arch + "_reference.pt");
  auto backbone = build(arch, (fixtures / (arch + ".pth")).string(), "load");
  ASSERT_TRUE(backbone.ok()) << backbone.status();
  (*backbone)->eval();
  torch::NoGradGuard no_grad;
  const auto input = load_reference(reference, "input");
  const auto expected_features = load_reference(reference, "features");
  const auto expected_logits = load_reference(reference, "logits");

  const auto features = (*backbone)->features(input);
  ASSERT_EQ(features.sizes(), expected_features.sizes());
  EXPECT_EQ((*backbone)->channels(), expected_features.size(1));
  EXPECT_LE(relative_error(features, expected_features), kTolerance);
  const auto logits = (*backbone)->classify(features);
  ASSERT_EQ(logits.sizes(), expected_logits.sizes());
  EXPECT_LE(relative_error(logits, expected_logits), kTolerance);
  EXPECT_LE(relative_error((*backbone)->forward(input), expected_logits), kTolerance);
  std::cerr << arch << ": relative error of features " << relative_error(features, expected_features)
            << ", of logits " << relative_error(logits, expected_logits) << "\n";
  // Not vacuous: the references are far from zero and differ between the two images.
  EXPECT_GT(expected_logits.abs().max().item<double>(), 1e-2);
  EXPECT_GT(relative_error(expected_logits[0], expected_logits[1]), 1e-2);
}

INSTANTIATE_TEST_SUITE_P(Backbones, BackboneParity, ::testing::Values("resnet18", "resnet50", "convnext_tiny"));

TEST(BackboneWeights, NewHeadLoadsTheBodyAndKeepsAFreshHeadForOtherClassCounts) {
  const fs::path fixtures = backbone_fixtures();
  const fs::path reference = fixtures / "resnet18_reference.pt";
  {
    auto backbone = build("resnet18", (fixtures / "resnet18.pth").string(), "auto", /*classes=*/3);
    ASSERT_TRUE(backbone.ok()) << backbone.status();
    (*backbone)->eval();
    torch::NoGradGuard no_grad;
    const auto features = (*backbone)->features(load_reference(reference, "input"));
    EXPECT_LE(relative_error(features, load_reference(reference, "features")), kTolerance);
    EXPECT_EQ((*backbone)->classify(features).sizes(), (std::vector<int64_t>{2, 3}));
  }
  // The same class count with head = "new": the body matches, the head is not the checkpoint's.
  auto fresh = build("resnet18", (fixtures / "resnet18.pth").string(), "new");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  (*fresh)->eval();
  torch::NoGradGuard no_grad;
  const auto features = (*fresh)->features(load_reference(reference, "input"));
  EXPECT_LE(relative_error(features, load_reference(reference, "features")), kTolerance);
  const auto logits = (*fresh)->classify(features);
  EXPECT_GT(relative_error(logits, load_reference(reference, "logits")), 1e-2);

  auto strict = build("resnet18", (fixtures / "resnet18.pth").string(), "load", /*classes=*/3);
  ASSERT_FALSE(strict.ok());
  EXPECT_NE(strict.status().message().find("'fc.weight' has 10 classes but the dataset has 3"), std::string::npos)
      << strict.status();
}

TEST(BackboneWeights, BadFilesGiveOneLineErrorsNamingTheFileAndTheKey) {
  const fs::path fixtures = backbone_fixtures();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"bad_missing.pth", "missing key 'layer2.1.bn2.running_var' (shape [128])"},
      {"bad_unexpected.pth", "unexpected key 'layer5.0.conv1.weight' (shape [3])"},
      {"bad_shape.pth", "key 'layer3.0.conv2.weight' has shape [256, 256, 1, 1] but the model expects [256, 256, 3, 3]"},
      {"bad_ordereddict.pth", "expected a plain dict of tensors saved by torch.save, found an OrderedDict"},
      {"bad_legacy.pth", "expected a plain dict of tensors saved by torch.save, cannot read it: "},
      {"does_not_exist.pth", "cannot open the weights file"},
  };
  for (const auto& [file, message] : cases) {
    const std::string path = (fixtures / file).string();
    auto backbone = build("resnet18", path, "load");
    ASSERT_FALSE(backbone.ok()) << file;
    const std::string text(backbone.status().message());
    EXPECT_NE(text.find(path + ": " + message), std::string::npos) << text;
    EXPECT_EQ(text.find('\n'), std::string::npos) << text;
  }
  // A convnext checkpoint is not a resnet: the first mismatch is named.
  auto wrong_arch = build("resnet18", (fixtures / "bad_convnext.pth").string());
  ASSERT_FALSE(wrong_arch.ok());
  EXPECT_NE(wrong_arch.status().message().find("missing key 'bn1.bias'"), std::string::npos) << wrong_arch.status();
}

TEST(BackboneWeights, Resnet34HasTorchvisionsParameterCountAndFeatureShape) {
  const int64_t expected = std::stoll(testing::read_text(backbone_fixtures() / "resnet34_parameters.txt"));
  auto backbone = build("resnet34", "");
  ASSERT_TRUE(backbone.ok()) << backbone.status();
  int64_t count = 0;
  for (const auto& p : (*backbone)->parameters()) count += p.numel();
  EXPECT_EQ(count, expected);
  (*backbone)->eval();
  torch::NoGradGuard no_grad;
  const auto features = (*backbone)->features(torch::randn({2, 3, 64, 64}));
  EXPECT_EQ(features.sizes(), (std::vector<int64_t>{2, 512, 2, 2}));
  EXPECT_EQ((*backbone)->channels(), 512);
  EXPECT_EQ((*backbone)->classify(features).sizes(), (std::vector<int64_t>{2, kClasses}));
  EXPECT_TRUE(torch::isfinite(features).all().item<bool>());
}

// Geometry: the declared stride is what a forward pass shows (input size over feature-map size);
// the receptive fields are the layer-by-layer counts: small_cnn's six 3x3 convs and two 2x2 pools
// 1+2+2+1+4+4+1+8+8 = 32 (hand count); ResNet-18's 435 is the published value (Araujo et al.,
// Distill 2019); ResNet-50 (v1.5, the stride in the 3x3) 427; ConvNeXt-T 1688.
TEST(BackboneGeometry, StridesMatchTheFeatureMapAndReceptiveFieldsTheLayerCounts) {
  const std::map<std::string, std::pair<int64_t, int64_t>> expected = {
      {"small_cnn", {4, 32}}, {"resnet18", {32, 435}}, {"resnet34", {32, 899}}, {"resnet50", {32, 427}},
      {"convnext_tiny", {32, 1688}}};
  for (const auto& [arch, geometry] : expected) {
    const auto* entry = builtin_registry().backbones.find(arch);
    ASSERT_NE(entry, nullptr) << arch;
    auto backbone = builtin_registry().backbones.build(arch, Params::defaults(entry->schema), image_context(kClasses));
    ASSERT_TRUE(backbone.ok()) << arch << ": " << backbone.status();
    (*backbone)->eval();
    torch::NoGradGuard no_grad;
    const auto features = (*backbone)->features(torch::randn({1, 3, 64, 64}));
    EXPECT_EQ((*backbone)->geometry().stride, 64 / features.size(2)) << arch;
    EXPECT_EQ((*backbone)->geometry().stride, geometry.first) << arch;
    EXPECT_EQ((*backbone)->geometry().receptive_field, geometry.second) << arch;
    EXPECT_EQ((*backbone)->geometry().patch_size, 0) << arch;
  }
}

// Where each built-in backbone's receptive fields lie, measured: the input rows whose change can
// change feature row r form an interval (the receptive field, when it lies inside the image).
// Perturbing rows 0..y reaches row r exactly when y >= its first row, and rows y..H - 1 exactly
// when y <= its last, so two bisections find both ends. The field's side and its centre must be
// the geometry's receptive_field and centre(r), which the backbones compute from their layers.
// ConvNeXt starts its blocks' layer scales at 1e-6, under float resolution beside the residual
// stream: they are set to 1 so that every path carries the change.
TEST(BackboneGeometry, ReceptiveFieldsAreWhereInputChangesReachACell) {
  const std::map<std::string, int64_t> height = {{"small_cnn", 64}, {"resnet18", 576}, {"resnet50", 576}, {"convnext_tiny", 1824}};
  for (const auto& [arch, image_height] : height) {
    const auto* entry = builtin_registry().backbones.find(arch);
    ASSERT_NE(entry, nullptr) << arch;
    auto built = builtin_registry().backbones.build(arch, Params::defaults(entry->schema), image_context(kClasses));
    ASSERT_TRUE(built.ok()) << arch << ": " << built.status();
    Backbone& backbone = **built;
    backbone.eval();
    torch::NoGradGuard no_grad;
    for (auto& item : backbone.named_parameters()) {
      if (item.key().find("layer_scale") != std::string::npos) item.value().fill_(1.0);
    }
    torch::manual_seed(3);
    const torch::Tensor images = torch::randn({1, 3, image_height, 32});
    const torch::Tensor features = backbone.features(images);
    const int64_t row = features.size(2) / 2;
    const BackboneGeometry geometry = backbone.geometry();
    ASSERT_TRUE(geometry.knows_centres()) << arch;
    auto reaches_row = [&](int64_t first, int64_t last) {
      torch::Tensor changed = images.clone();
      changed.slice(2, first, last + 1) += 50.0;
      return backbone.features(changed).select(2, row).ne(features.select(2, row)).any().item<bool>();
    };
    int64_t lo = 0, hi = image_height - 1;  // the first row y with reaches_row(0, y)
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (reaches_row(0, mid)) hi = mid; else lo = mid + 1;
    }
    const int64_t first = lo;
    lo = 0, hi = image_height - 1;  // the last row y with reaches_row(y, H - 1)
    while (lo < hi) {
      const int64_t mid = (lo + hi + 1) / 2;
      if (reaches_row(mid, image_height - 1)) lo = mid; else hi = mid - 1;
    }
    const int64_t last = lo;
    ASSERT_GT(first, 0) << arch << ": the field must lie inside the image";
    ASSERT_LT(last, image_height - 1) << arch << ": the field must lie inside the image";
    EXPECT_EQ(last - first + 1, geometry.receptive_field) << arch;
    EXPECT_DOUBLE_EQ((static_cast<double>(first) + static_cast<double>(last)) / 2.0, geometry.centre(row)) << arch;
  }
}

TEST(BackboneWeights, TrainableHeadFreezesTheBodyAndKeepsItInEvalMode) {
  const auto* entry = builtin_registry().backbones.find("convnext_tiny");
  ASSERT_NE(entry, nullptr);
  Params params = Params::defaults(entry->schema);
  params.set("trainable", std::string("head"));
  auto backbone = builtin_registry().backbones.build("convnext_tiny", params, image_context(kClasses, 32));
  ASSERT_TRUE(backbone.ok()) << backbone.status();
  (*backbone)->train();
  int64_t trainable = 0;
  for (const auto& item : (*backbone)->named_parameters()) {
    EXPECT_EQ(item.value().requires_grad(), item.key().rfind("classifier.", 0) == 0) << item.key();
    if (item.value().requires_grad()) trainable += item.value().numel();
  }
  EXPECT_EQ(trainable, 2 * 768 + 768 * kClasses + kClasses);  // LayerNorm2d + linear
  // Stochastic depth is off in eval mode: two training-mode passes agree.
  const auto images = torch::randn({2, 3, 32, 32});
  EXPECT_TRUE(torch::equal((*backbone)->features(images), (*backbone)->features(images)));
  for (const auto& item : (*backbone)->named_children()) {
    EXPECT_EQ(item.value()->is_training(), item.key() == "classifier") << item.key();
  }
}

}  // namespace
}  // namespace protoquant
