// Local explanations (core/src/report/explanation.h) against known activations: on an image with one
// texture, the prototype of that texture explains the class and its map peaks on the texture;
// the nearest training patches are the true top-k by cosine similarity, computed here by brute
// force; and `protoquant explain` on a finished run writes its PNG, or one-line errors and nothing.
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>

#include <algorithm>

#include <fmt/format.h>

#include "core/src/report/explanation.h"
#include "test_models.h"
#include "test_support.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;
using testing::CosineHead;
using testing::SquareBackbone;

constexpr int64_t kSize = 40;

torch::Tensor with_texture(const torch::Tensor& texture, int64_t y, int64_t x) {
  torch::Tensor image = torch::zeros({1, 3, kSize, kSize});
  image.index_put_({0, torch::indexing::Slice(), torch::indexing::Slice(y, y + 9), torch::indexing::Slice(x, x + 9)}, texture);
  return image;
}

TEST(Explanation, TheTexturesPrototypeExplainsTheClassAndPeaksOnTheTexture) {
  torch::manual_seed(5);
  const torch::Tensor texture = torch::rand({3, 9, 9});
  auto backbone = std::make_shared<SquareBackbone>(0);
  torch::Tensor prototype;
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor alone = with_texture(texture, 10, 10);
    prototype = backbone->unshifted(alone).select(3, 14).select(2, 14);  // the texture's centre cell
  }
  // Prototype 0: the texture; 1 and 2: random directions. Class 0 weighs the texture most.
  const torch::Tensor prototypes = torch::cat({prototype, torch::randn({2, 8})});
  const torch::Tensor weights = torch::tensor({{2.0f, 0.1f, 0.1f}, {0.1f, 1.0f, 1.0f}});
  Model model;
  model.backbone = backbone;
  model.head = std::make_shared<CosineHead>(prototypes, weights);
  const torch::Tensor image = with_texture(texture, 22, 7);  // the texture's centre at (26, 11)
  // Training "split": five images with noisy copies of the texture at known places, as feature maps
  // (noise, not only scale: cosine similarity ignores scale, and ties would decide the order).
  std::vector<torch::Tensor> train_images;
  for (int64_t i = 0; i < 5; ++i) {
    train_images.push_back(with_texture(texture + 0.15 * (i + 1) * torch::rand({3, 9, 9}), 3 * i, 30 - 5 * i));
  }
  torch::Tensor train_features;
  {
    torch::NoGradGuard no_grad;
    train_features = backbone->features(torch::cat(train_images));
  }
  TensorSource train(train_features, torch::zeros({5}, torch::kInt64));
  const ImageFeatures features_of = [&](const torch::Tensor& images) { return backbone->features(images); };
  auto explained = explain_image(model, image, train, 2, -1, 3, features_of);
  ASSERT_TRUE(explained.ok()) << explained.status();
  EXPECT_EQ(explained->predicted, 0);
  ASSERT_EQ(explained->prototypes.size(), 2u);
  const auto& first = explained->prototypes[0];
  EXPECT_EQ(first.prototype, 0);
  EXPECT_NEAR(first.contribution, first.presence * 2.0, 1e-5);
  EXPECT_NEAR(first.peak_row, 26, 1);
  EXPECT_NEAR(first.peak_column, 11, 1);
  // The class score is the sum of every prototype's contribution.
  double total = 0;
  {
    torch::NoGradGuard no_grad;
    const HeadOutput out = model.head->forward(backbone->features(image));
    for (int64_t p = 0; p < 3; ++p) total += out.presence[0][p].item<double>() * weights[0][p].item<double>();
  }
  EXPECT_NEAR(explained->class_score, total, 1e-5);

  // Nearest patches, by brute force: every cell's cosine to each prototype, the best cell per image.
  for (const auto& p : explained->prototypes) {
    const torch::Tensor e = prototypes[p.prototype] / prototypes[p.prototype].norm();
    std::vector<std::tuple<double, int64_t, int64_t>> best;  // (similarity, image, cell)
    for (int64_t i = 0; i < 5; ++i) {
      const torch::Tensor rows = train_features[i].permute({1, 2, 0}).reshape({-1, 8});
      const torch::Tensor cos = rows.matmul(e) / rows.norm(2, 1).clamp_min(1e-6);
      const int64_t cell = cos.argmax().item<int64_t>();
      best.emplace_back(cos[cell].item<double>(), i, cell);
    }
    std::stable_sort(best.begin(), best.end(), [](const auto& a, const auto& b) { return std::get<0>(a) > std::get<0>(b); });
    ASSERT_EQ(p.nearest.size(), 3u);
    for (size_t j = 0; j < 3; ++j) {
      EXPECT_EQ(p.nearest[j].image, std::get<1>(best[j])) << p.prototype << " " << j;
      EXPECT_EQ(p.nearest[j].row * kSize + p.nearest[j].column, std::get<2>(best[j]));
      EXPECT_NEAR(p.nearest[j].similarity, std::get<0>(best[j]), 1e-5);
    }
  }
  EXPECT_EQ(explain_image(model, image, train, 2, 7, 3,
                          [&](const torch::Tensor& images) { return model.backbone->features(images); }).status().message(), "--class 7: the model has classes 0..1");
}

// The box an explanation draws is centred where the backbone centres the cell's receptive field:
// for the small CNN that is the cell's centre anyway (4 r + 1.5, pixel centres at integers); a
// ResNet's padded layers centre cell r on pixel 32 r, 15.5 px up and left of the cell's centre.
TEST(Explanation, BoxesSitOnTheReceptiveFieldsCentre) {
  const BackboneGeometry small{4, 32, 0, 1.5}, small_unknown{4, 32, 0};
  for (int64_t r = 0; r < 14; ++r) {
    EXPECT_EQ(cell_region(r, 13 - r, small, 56, 56, 14, 14), cell_region(r, 13 - r, small_unknown, 56, 56, 14, 14)) << r;
  }
  const BackboneGeometry field{32, 65, 0, 0.0}, field_unknown{32, 65, 0};
  const cv::Rect centred = cell_region(3, 2, field, 224, 224, 7, 7);
  EXPECT_EQ(centred.y, 64);  // (96 + 1/2) - 65 / 2
  EXPECT_EQ(centred.y + centred.height, 129);
  EXPECT_EQ(centred.x, 32);
  EXPECT_EQ(cell_region(3, 2, field_unknown, 224, 224, 7, 7).y, 79);  // (3 + 1/2) x 32 - 65 / 2
}

TEST(Explanation, ExplainCommandWritesAPictureOrOneLineErrors) {
  testing::TempDir dir;
  const fs::path manifest = testing::tiny_manifest(dir, "synthparts.toml", "tiny");
  const fs::path run = dir / "runs" / "tiny";
  const auto trained = testing::run_cli("run " + manifest.string() + " --out " + run.string());
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  const auto explained = testing::run_cli("explain " + run.string() + " --test-index 5 --top 3 --patches 2");
  ASSERT_EQ(explained.exit_code, 0) << explained.output;
  const cv::Mat picture = cv::imread((run / "explanations" / "test-5.png").string());
  ASSERT_FALSE(picture.empty());
  EXPECT_GE(picture.rows, 4 * 160);  // the input and three prototype rows, 32-px images shown x5
  EXPECT_NE(explained.output.find("prototype"), std::string::npos);

  // The gallery: every prototype's 10 nearest patches, 16 prototypes a page (the run has 128).
  const auto gallery = testing::run_cli("explain " + run.string() + " --gallery");
  ASSERT_EQ(gallery.exit_code, 0) << gallery.output;
  for (int page = 1; page <= 8; ++page) {
    const cv::Mat image = cv::imread((run / "gallery" / fmt::format("gallery-{:03d}.png", page)).string());
    ASSERT_FALSE(image.empty()) << page;
    EXPECT_EQ(image.rows, 6 + 16 * (96 + 6)) << page;
    EXPECT_EQ(image.cols, 300 + 10 * (96 + 6) + 6) << page;
  }
  EXPECT_FALSE(fs::exists(run / "gallery" / "gallery-009.png"));
  const auto neither = testing::run_cli("explain " + run.string());
  EXPECT_EQ(neither.exit_code, 1);
  EXPECT_NE(neither.output.find("give one of --test-index I, --image FILE or --gallery"), std::string::npos) << neither.output;

  const auto past = testing::run_cli("explain " + run.string() + " --test-index 32 --out " + (dir / "x.png").string());
  EXPECT_EQ(past.exit_code, 1);
  EXPECT_NE(past.output.find("--test-index 32: split 'test' has samples 0..31"), std::string::npos) << past.output;
  EXPECT_FALSE(fs::exists(dir / "x.png"));
  const auto nowhere = testing::run_cli("explain " + (dir / "nothing").string() + " --test-index 0");
  EXPECT_EQ(nowhere.exit_code, 1);
  EXPECT_NE(nowhere.output.find("not a run folder"), std::string::npos) << nowhere.output;
}

}  // namespace
}  // namespace protoquant
