// FunnyBirds' interventions on synthparts: a sample re-rendered without some parts, or without a
// background object, is the same scene with only those things missing. Checked pixel by pixel
// against the original's part map, through the eval transform (a centre crop) that moves the map
// with the pixels; and a dataset that cannot re-render says so in one line.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "datasets/image/synthparts.h"
#include "test_support.h"

namespace protoquant {
namespace {

std::shared_ptr<Dataset> intervening_synthparts(double clutter = 0.5) {
  auto& registry = testing::builtin_registry();
  const auto* entry = registry.datasets.find("synthparts");
  EXPECT_NE(entry, nullptr);
  Params params = Params::defaults(entry->schema);
  params.set("classes", int64_t{6});
  params.set("parts", int64_t{10});
  params.set("parts_per_class", int64_t{4});
  params.set("test_per_class", int64_t{4});
  params.set("clutter", clutter);
  params.set("train_transform", std::vector<std::string>{"center_crop:56"});
  params.set("eval_transform", std::vector<std::string>{"center_crop:56"});
  auto dataset = registry.datasets.build("synthparts", params, {});
  EXPECT_TRUE(dataset.ok()) << dataset.status();
  return dataset.ok() ? *dataset : nullptr;
}

Batch intervened(Dataset& data, const torch::Tensor& indices, const Intervention& intervention) {
  auto batch = data.get_intervened_batch("test", indices, {intervention});
  EXPECT_TRUE(batch.ok()) << batch.status();
  return batch.ok() ? *batch : Batch{};
}

// Pixels (B x H x W) where any channel differs.
torch::Tensor changed(const Batch& a, const Batch& b) { return a.images.ne(b.images).any(1); }

TEST(Interventions, NothingRemovedIsTheEvalSampleWithAPartMapThatMatchesItsParts) {
  auto data = intervening_synthparts();
  ASSERT_NE(data, nullptr);
  const DatasetInfo& info = data->info();
  ASSERT_TRUE(info.has_interventions);
  ASSERT_EQ(info.class_parts.size(), 6U);
  const torch::Tensor indices = torch::arange(data->size("test"));
  const Batch original = intervened(*data, indices, {});
  auto eval = data->get_eval_batch("test", indices);
  ASSERT_TRUE(eval.ok()) << eval.status();
  EXPECT_TRUE(torch::equal(original.images, eval->images));
  EXPECT_TRUE(torch::equal(original.parts, eval->parts));
  EXPECT_TRUE(torch::equal(original.labels, eval->labels));
  ASSERT_EQ(original.part_maps.sizes(), (std::vector<int64_t>{indices.size(0), 56, 56}));
  int64_t checked = 0;
  for (int64_t i = 0; i < indices.size(0); ++i) {
    const auto& own = info.class_parts[static_cast<size_t>(original.labels[i].item<int64_t>())];
    const torch::Tensor map = original.part_maps[i];
    for (int64_t p = 0; p < static_cast<int64_t>(info.part_names.size()); ++p) {
      const torch::Tensor shows = map.eq(p + 1);
      const bool is_own = std::find(own.begin(), own.end(), p) != own.end();
      if (!is_own) {
        EXPECT_FALSE(shows.any().item<bool>()) << "sample " << i << " shows part " << p << " of another class";
        continue;
      }
      // A visible part shows around its keypoint: every pixel of it within the part's radius
      // (at most 12 % of 64 px, + 1) of the keypoint, and some pixel at all.
      if (original.parts[i][p][2].item<float>() < 0.5F) continue;
      ASSERT_TRUE(shows.any().item<bool>()) << "sample " << i << " part " << p;
      const torch::Tensor where = shows.nonzero().to(torch::kFloat32);  // (row, column)
      const torch::Tensor keypoint = torch::stack({original.parts[i][p][1], original.parts[i][p][0]});
      EXPECT_LE((where - keypoint).abs().max().item<float>(), 9.0F) << "sample " << i << " part " << p;
      ++checked;
    }
  }
  EXPECT_GT(checked, 30);
  // The background objects are in the map too.
  EXPECT_TRUE(original.part_maps.lt(0).any().item<bool>());
}

TEST(Interventions, RemovingPartsChangesOnlyThePixelsTheyShowed) {
  auto data = intervening_synthparts();
  ASSERT_NE(data, nullptr);
  const DatasetInfo& info = data->info();
  const torch::Tensor indices = torch::arange(data->size("test"));
  const Batch original = intervened(*data, indices, {});
  // Each part of the vocabulary alone, then each class's whole part set.
  std::vector<std::vector<int64_t>> removals;
  for (int64_t p = 0; p < static_cast<int64_t>(info.part_names.size()); ++p) removals.push_back({p});
  for (const auto& own : info.class_parts) removals.push_back(own);
  int64_t moved = 0;
  for (const auto& removed : removals) {
    const Batch without = intervened(*data, indices, Intervention{removed, -1});
    torch::Tensor region = torch::zeros_like(original.part_maps, torch::kBool);
    for (int64_t p : removed) region |= original.part_maps.eq(p + 1);
    const torch::Tensor differs = changed(original, without);
    EXPECT_FALSE((differs & ~region).any().item<bool>()) << "a pixel outside the removed parts changed";
    moved += differs.sum().item<int64_t>();
    // The parts are gone from the map and the keypoints; the rest of the map stays.
    for (int64_t p : removed) {
      EXPECT_FALSE(without.part_maps.eq(p + 1).any().item<bool>());
      EXPECT_FALSE(without.parts.select(1, p).select(1, 2).gt(0.5).any().item<bool>());
    }
    EXPECT_TRUE(torch::equal(without.part_maps.masked_select(~region), original.part_maps.masked_select(~region)));
    EXPECT_TRUE(torch::equal(without.labels, original.labels));
  }
  EXPECT_GT(moved, 1000);
}

TEST(Interventions, RemovingABackgroundObjectChangesOnlyItsPixels) {
  auto data = intervening_synthparts();
  ASSERT_NE(data, nullptr);
  const torch::Tensor indices = torch::arange(data->size("test"));
  const Batch original = intervened(*data, indices, {});
  const int64_t objects = -original.part_maps.min().item<int64_t>();
  ASSERT_GT(objects, 5);
  int64_t moved = 0;
  for (int64_t k = 0; k < objects; ++k) {
    const Batch without = intervened(*data, indices, Intervention{{}, k});
    const torch::Tensor region = original.part_maps.eq(-(k + 1));
    const torch::Tensor differs = changed(original, without);
    EXPECT_FALSE((differs & ~region).any().item<bool>()) << "object " << k;
    moved += differs.sum().item<int64_t>();
    EXPECT_FALSE(without.part_maps.eq(-(k + 1)).any().item<bool>()) << "object " << k;
    EXPECT_TRUE(torch::equal(without.part_maps.masked_select(~region), original.part_maps.masked_select(~region)));
    EXPECT_TRUE(torch::equal(without.parts, original.parts));
  }
  EXPECT_GT(moved, 1000);
}

// One intervention each: sample i without part i's, as if rendered alone.
TEST(Interventions, EachSampleCanHaveItsOwnIntervention) {
  auto data = intervening_synthparts();
  ASSERT_NE(data, nullptr);
  const torch::Tensor indices = torch::arange(data->size("test"));
  std::vector<Intervention> each;
  for (int64_t i = 0; i < indices.size(0); ++i) {
    each.push_back(Intervention{{i % 10}, i % 3 == 0 ? int64_t{i % 7} : int64_t{-1}});
  }
  auto together = data->get_intervened_batch("test", indices, each);
  ASSERT_TRUE(together.ok()) << together.status();
  for (int64_t i = 0; i < indices.size(0); i += 5) {
    const Batch alone = intervened(*data, indices.slice(0, i, i + 1), each[static_cast<size_t>(i)]);
    EXPECT_TRUE(torch::equal(together->images.slice(0, i, i + 1), alone.images)) << i;
    EXPECT_TRUE(torch::equal(together->part_maps.slice(0, i, i + 1), alone.part_maps)) << i;
  }
  const auto miscounted = data->get_intervened_batch("test", indices, {Intervention{}, Intervention{}});
  ASSERT_FALSE(miscounted.ok());
  EXPECT_NE(std::string(miscounted.status().message()).find("2 interventions for"), std::string::npos);
}

TEST(Interventions, ADatasetThatCannotReRenderSaysSoInOneLine) {
  // The same images written as files: an image folder holds pixels, not scenes.
  auto generator = datasets::SynthParts::create(datasets::SynthPartsConfig{});
  ASSERT_TRUE(generator.ok()) << generator.status();
  testing::TempDir dir;
  ASSERT_TRUE(datasets::write_image_folder(*generator, dir.path(), "png").ok());
  auto& registry = testing::builtin_registry();
  Params params = Params::defaults(registry.datasets.find("image_folder")->schema);
  params.set("root", dir.path().string());
  params.set("train_transform", std::vector<std::string>{"center_crop:56"});
  params.set("eval_transform", std::vector<std::string>{"center_crop:56"});
  auto folder = registry.datasets.build("image_folder", params, {});
  ASSERT_TRUE(folder.ok()) << folder.status();
  EXPECT_FALSE((*folder)->info().has_interventions);
  const auto refused = (*folder)->get_intervened_batch("test", torch::arange(2), {Intervention{}});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(std::string(refused.status().message()).find("cannot re-render"), std::string::npos) << refused.status();
  EXPECT_EQ(std::string(refused.status().message()).find('\n'), std::string::npos);
}

}  // namespace
}  // namespace protoquant
