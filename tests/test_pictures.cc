// Pictures of what the model sees (core/src/report/pictures.h): a normalised batch image drawn back is
// the generator's own image, and the data preview puts each class's samples in its row with the
// part keypoints where the dataset says they are.
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>

#include "core/src/report/pictures.h"
#include "datasets/image/synthparts.h"
#include "test_support.h"

namespace protoquant {
namespace {

std::shared_ptr<Dataset> synthparts(int64_t size) {
  auto& registry = testing::builtin_registry();
  Params params = Params::defaults(registry.datasets.find("synthparts")->schema);
  params.set("classes", int64_t{3});
  params.set("train_per_class", int64_t{4});
  params.set("test_per_class", int64_t{2});
  params.set("parts", int64_t{6});
  params.set("parts_per_class", int64_t{3});
  params.set("image_size", size);
  params.set("seed", int64_t{5});
  params.set("eval_transform", std::vector<std::string>{});
  auto dataset = registry.datasets.build("synthparts", params, {});
  EXPECT_TRUE(dataset.ok()) << dataset.status();
  return *dataset;
}

datasets::SynthParts generator() {
  datasets::SynthPartsConfig config;
  config.classes = 3;
  config.train_per_class = 4;
  config.test_per_class = 2;
  config.parts = 6;
  config.parts_per_class = 3;
  config.image_size = 32;
  config.seed = 5;
  return *datasets::SynthParts::create(config);
}

TEST(Pictures, ANormalisedImageDrawnBackIsTheGeneratorsImage) {
  auto dataset = synthparts(32);
  const Batch batch = *dataset->get_eval_batch("train", torch::arange(3, torch::kInt64));
  const auto gen = generator();
  for (int64_t i = 0; i < 3; ++i) {
    const cv::Mat shown = displayable(batch.images[i], dataset->info());
    const cv::Mat drawn = gen.draw("train", i).image;
    ASSERT_EQ(shown.size(), drawn.size());
    cv::Mat difference;
    cv::absdiff(shown, drawn, difference);
    double worst = 0;
    cv::minMaxLoc(difference.reshape(1), nullptr, &worst);
    EXPECT_LE(worst, 1.0) << i;  // uint8 -> normalised float -> uint8: at most one rounding step
  }
}

TEST(Pictures, ThePreviewHasEachClassInItsRowWithItsKeypoints) {
  auto dataset = synthparts(32);
  auto preview = data_preview(*dataset, "train", 3, /*augment=*/false);
  ASSERT_TRUE(preview.ok()) << preview.status();
  ASSERT_EQ(preview->cells.size(), 9u);  // 3 classes x 3 samples
  const auto gen = generator();
  for (const auto& cell : preview->cells) {
    const datasets::SynthImage truth = gen.draw("train", cell.index);
    EXPECT_EQ(truth.label, cell.label);
    EXPECT_EQ(cell.scale, 3);  // 32 px shown at >= 96 px
    // Row by class, top to bottom.
    if (cell.label > 0) EXPECT_GT(cell.rect.y, preview->cells.front().rect.y);
    const cv::Mat region = preview->image(cell.rect);
    for (size_t j = 0; j < truth.parts.size(); ++j) {
      const auto& kp = truth.parts[j];
      if (!kp.visible) continue;
      const int x = static_cast<int>(kp.x) * cell.scale + 1, y = static_cast<int>(kp.y) * cell.scale + 1;
      const cv::Scalar colour = part_colour(static_cast<int64_t>(j));
      const cv::Vec3b pixel = region.at<cv::Vec3b>(y, x);
      EXPECT_NEAR(pixel[0], colour[0], 1) << "sample " << cell.index << " part " << j;
      EXPECT_NEAR(pixel[1], colour[1], 1);
      EXPECT_NEAR(pixel[2], colour[2], 1);
    }
    // A corner far from every part is the image itself, upscaled by nearest neighbour.
    const cv::Vec3b corner = region.at<cv::Vec3b>(0, 0);
    const cv::Vec3b source = truth.image.at<cv::Vec3b>(0, 0);
    bool near_part = false;
    for (const auto& kp : truth.parts) near_part |= (kp.x < 3 && kp.y < 3 && (kp.x > 0 || kp.y > 0));
    if (!near_part && truth.box.x > 1 && truth.box.y > 1) {
      for (int c = 0; c < 3; ++c) EXPECT_NEAR(corner[c], source[c], 1) << "sample " << cell.index;
    }
  }
  // Written as a PNG that reads back the same.
  testing::TempDir dir;
  ASSERT_TRUE(write_png(dir / "preview.png", preview->image).ok());
  const cv::Mat read = cv::imread((dir / "preview.png").string());
  ASSERT_EQ(read.size(), preview->image.size());
  EXPECT_EQ(cv::norm(read, preview->image, cv::NORM_INF), 0.0);
}

TEST(Pictures, DataPreviewThroughTheCli) {
  testing::TempDir dir;
  const auto result = testing::run_cli("data " + std::string(PQ_SOURCE_DIR) +
                                       "/experiments/synthparts.toml --set dataset.train_per_class=4 "
                                       "--set dataset.test_per_class=2 --preview " + (dir / "p.png").string() +
                                       " --per-class 2");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("preview: "), std::string::npos) << result.output;
  const cv::Mat read = cv::imread((dir / "p.png").string());
  EXPECT_EQ(read.rows, 28 + 10 * (112 + 6) + 6);  // a title, then 10 classes of 56-px crops shown x2
  const auto bad = testing::run_cli("data " + std::string(PQ_SOURCE_DIR) + "/experiments/synthparts.toml --set "
                                    "dataset.train_per_class=4 --preview " + (dir / "q.png").string() + " --split nope");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_FALSE(std::filesystem::exists(dir / "q.png"));
}

}  // namespace
}  // namespace protoquant
