// The interpretability metrics against ground truth (METHOD.md): the localisation service
// against independent computations, then consistency, purity, stability, sizes and grounding on
// synthparts, whose part keypoints are known. An oracle head (each prototype's map a bump on one
// part type, drawn from the keypoints) must score purity 1 and consistency 100; random maps must
// score the chance level the test computes from the part geometry alone; stability is 100 at
// zero noise and falls as the noise grows; sizes equal hand counts; merged shards equal the whole.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <functional>
#include <tuple>

#include "datasets/image/synthparts.h"
#include "protoquant/evaluation_pass.h"
#include "protoquant/localisation.h"
#include "protoquant/metric.h"

#include "test_models.h"
#include "test_support.h"

namespace protoquant {
namespace {

using nlohmann::json;
using testing::ConvBackbone;
using testing::CosineHead;
using testing::SquareBackbone;

// --- the localisation service ---------------------------------------------------------------

TEST(Localisation, BicubicIsOpenCvsInterCubicAsTorchComputesItToo) {
  // PyTorch's bicubic (align_corners = false) uses OpenCV's kernel (A = -0.75), half-pixel centres
  // and a replicated border: an independent implementation of the same resize.
  torch::manual_seed(1);
  const torch::Tensor maps = torch::rand({5, 7, 9});
  const torch::Tensor ours = upsample_maps(maps, 28, 36, Upsampling::kBicubic);
  const torch::Tensor theirs = torch::upsample_bicubic2d(maps.unsqueeze(1), {28, 36}, false).squeeze(1);
  EXPECT_LT((ours - theirs).abs().max().item<float>(), 1e-4);
  const torch::Tensor linear = upsample_maps(maps, 28, 36, Upsampling::kBilinear);
  const torch::Tensor torch_linear = torch::upsample_bilinear2d(maps.unsqueeze(1), {28, 36}, false).squeeze(1);
  EXPECT_LT((linear - torch_linear).abs().max().item<float>(), 1e-4);
}

TEST(Localisation, CellCentreAnchoringCentresPatchesAndPeaksOnTheCell) {
  LocalisationSettings centred;
  centred.anchor = Anchor::kCellCentre;
  centred.patch_size = 8;
  // 14 cells over 56 px: cell r's centre is 4 r + 2; the patch spans centre -+ 4, inside the image.
  const PixelBox middle = patch_of_cell(3, 5, 14, 14, 56, 56, centred);
  EXPECT_EQ(middle.y0, 10);
  EXPECT_EQ(middle.y1, 18);
  EXPECT_EQ(middle.x0, 18);
  EXPECT_EQ(middle.x1, 26);
  EXPECT_EQ(patch_of_cell(0, 13, 14, 14, 56, 56, centred).y0, 0);   // shifted in at the top
  EXPECT_EQ(patch_of_cell(0, 13, 14, 14, 56, 56, centred).x1, 56);  // and at the right
  // The references' anchoring is PIP-Net's patch, unchanged.
  LocalisationSettings reference;
  reference.patch_size = 8;
  const PixelBox pip = patch_of_cell(3, 5, 14, 14, 56, 56, reference);
  const PixelBox direct = purity_patch(3, 5, 14, 14, 56, 56, 8);
  EXPECT_EQ(pip.y0, direct.y0);
  EXPECT_EQ(pip.x1, direct.x1);
  // Peaks: the centre pixel of the peak cell, floor((r + 1/2) * 4), without upsampling.
  torch::Tensor maps = torch::zeros({2, 12, 12});
  maps[0][2][5] = 1;
  maps[1][11][0] = 1;
  const torch::Tensor peaks = localise_peaks(maps, 48, 48, centred);
  EXPECT_EQ(peaks[0][0].item<int64_t>(), 10);
  EXPECT_EQ(peaks[0][1].item<int64_t>(), 22);
  EXPECT_EQ(peaks[1][0].item<int64_t>(), 46);
  EXPECT_EQ(peaks[1][1].item<int64_t>(), 2);
}

// The receptive field's centre comes from the backbone's geometry, so it differs from the cell's
// centre where the paddings say so: ResNet's padded layers centre cell r on pixel 32 r, not on
// 32 r + 15.5.
TEST(Localisation, ReceptiveFieldCentreAnchoringFollowsTheBackbonesGeometry) {
  LocalisationSettings given;
  given.anchor = Anchor::kReceptiveFieldCentre;
  given.patch_size = 32;
  BackboneGeometry unknown;
  unknown.stride = 32;
  const auto refused = given.for_pass(224, 7, unknown);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(std::string(refused.status().message()).find("centre_offset"), std::string::npos) << refused.status();
  LocalisationSettings peak;
  EXPECT_TRUE(peak.for_pass(224, 7, unknown).ok());  // the references' anchor needs no geometry

  const BackboneGeometry resnet{32, 435, 0, 0.0};
  const auto resolved = given.for_pass(224, 7, resnet);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  torch::Tensor maps = torch::zeros({1, 7, 7});
  maps[0][2][5] = 1;
  const torch::Tensor peaks = localise_peaks(maps, 224, 224, *resolved);
  EXPECT_EQ(peaks[0][0].item<int64_t>(), 64);
  EXPECT_EQ(peaks[0][1].item<int64_t>(), 160);
  LocalisationSettings cell = given;
  cell.anchor = Anchor::kCellCentre;
  EXPECT_EQ(localise_peaks(maps, 224, 224, cell)[0][0].item<int64_t>(), 80);
  // The patch's 33 pixels (tested inclusively) sit symmetrically around the centre pixel, shifted
  // inside at the border.
  const PixelBox patch = patch_of_cell(2, 5, 7, 7, 224, 224, *resolved);
  EXPECT_EQ(patch.y0, 48);
  EXPECT_EQ(patch.y1, 80);
  EXPECT_EQ(patch.x0, 144);
  EXPECT_EQ(patch_of_cell(0, 6, 7, 7, 224, 224, *resolved).y0, 0);  // centred on pixel 0: shifted in
  // The last cell's field is centred on pixel 192, not near the border as the cell's centre is.
  EXPECT_EQ(patch_of_cell(0, 6, 7, 7, 224, 224, *resolved).x1, 208);
  EXPECT_EQ(patch_of_cell(0, 6, 7, 7, 224, 224, cell).x1, 224);
  const nlohmann::json record = resolved->to_json();
  EXPECT_EQ(record["anchor"], "receptive_field_centre");
  EXPECT_EQ(record["stride"], 32);
  EXPECT_DOUBLE_EQ(record["centre_offset"].get<double>(), 0.0);

  // The small CNN's unpadded pools centre cell r on 4 r + 1.5: the peak pixel rounds up to the
  // cell's centre pixel 4 r + 2.
  const auto small = given.for_pass(56, 14, BackboneGeometry{4, 32, 0, 1.5});
  ASSERT_TRUE(small.ok()) << small.status();
  torch::Tensor small_maps = torch::zeros({1, 14, 14});
  small_maps[0][3][0] = 1;
  EXPECT_EQ(localise_peaks(small_maps, 56, 56, *small)[0][0].item<int64_t>(), 14);
  EXPECT_EQ(localise_peaks(small_maps, 56, 56, *small)[0][1].item<int64_t>(), 2);
  // So for the small CNN both anchorings give the same pixels, peaks and 8-px patches alike, which
  // is why the synthparts manifests' cell_centre numbers stand for either.
  LocalisationSettings small_cell = *small;
  small_cell.anchor = Anchor::kCellCentre;
  small_cell.patch_size = 8;
  LocalisationSettings small_field = *small;
  small_field.patch_size = 8;
  const torch::Tensor every_cell = torch::eye(14 * 14).view({14 * 14, 14, 14});
  EXPECT_TRUE(localise_peaks(every_cell, 56, 56, small_field).equal(localise_peaks(every_cell, 56, 56, small_cell)));
  for (int64_t r = 0; r < 14; ++r) {
    const PixelBox field = patch_of_cell(r, 13 - r, 14, 14, 56, 56, small_field);
    const PixelBox centre = patch_of_cell(r, 13 - r, 14, 14, 56, 56, small_cell);
    EXPECT_EQ(std::tie(field.y0, field.y1, field.x0, field.x1), std::tie(centre.y0, centre.y1, centre.x0, centre.x1)) << r;
  }
}

TEST(Localisation, SizesInCellsResolveToPixelsAtTheMapsScale) {
  Params params = Params::defaults(localisation_schema());
  params.set("size_unit", std::string("cells"));
  params.set("half_size", int64_t{2});
  params.set("patch_size", int64_t{3});
  const LocalisationSettings given = localisation_settings(params);
  EXPECT_EQ(given.size_unit, SizeUnit::kCells);
  // 56 px over 14 rows: 4 px a cell.
  const LocalisationSettings resolved = given.in_pixels(56, 14);
  EXPECT_EQ(resolved.half_size, 8);
  EXPECT_EQ(resolved.patch_size, 12);
  EXPECT_DOUBLE_EQ(resolved.pixels_per_cell, 4.0);
  EXPECT_EQ(resolved.in_pixels(56, 14).half_size, 8);  // resolved once, not scaled again
  const nlohmann::json record = resolved.to_json();
  EXPECT_EQ(record["size_unit"], "cells");
  EXPECT_DOUBLE_EQ(record["half_size_cells"].get<double>(), 2.0);
  EXPECT_EQ(record["half_size"], 8);
  // At 224 px over 7 rows the same setting is 32 px a cell: 64 and 96.
  EXPECT_EQ(given.in_pixels(224, 7).half_size, 64);
  EXPECT_EQ(given.in_pixels(224, 7).patch_size, 96);
  // Pixels stay pixels.
  LocalisationSettings pixels;
  pixels.half_size = 9;
  EXPECT_EQ(pixels.in_pixels(56, 14).half_size, 9);
  EXPECT_EQ(pixels.to_json()["size_unit"], "px");
}

TEST(Localisation, TieRulesPickTheReferencesMaxima) {
  torch::Tensor map = torch::zeros({1, 3, 4});
  map[0][0][3] = 1;  // row 0, column 3: first in row-major order
  map[0][2][1] = 1;  // row 2, column 1: lowest column
  EXPECT_TRUE(torch::equal(peak_positions(map, PeakTies::kRowMajor), torch::tensor({{0, 3}}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(peak_positions(map, PeakTies::kColumnFirst), torch::tensor({{2, 1}}, torch::kInt64)));
}

TEST(Localisation, RegionBoundsAreInclusiveAndKeypointsTruncated) {
  LocalisationSettings settings;  // half size 36, inclusive: EvalProtoPNet's 73-px window
  const torch::Tensor peaks = torch::tensor({{40, 40}, {40, 40}, {40, 40}, {40, 40}, {0, 0}}, torch::kInt64);
  // (x, y, visible): y = 76 is the last row in; 77 is out; x = 76.9 truncates to 76; an invisible
  // part never counts; near the corner the region is clipped at 0.
  const torch::Tensor parts = torch::tensor({{{40.f, 76.f, 1.f}}, {{40.f, 77.f, 1.f}}, {{76.9f, 40.f, 1.f}},
                                             {{40.f, 40.f, 0.f}}, {{0.f, 36.f, 1.f}}});
  const torch::Tensor hits = parts_near_peaks(peaks, parts, 224, 224, settings).squeeze(1);
  EXPECT_TRUE(torch::equal(hits, torch::tensor({true, false, true, false, true})));
  settings.inclusive = false;
  EXPECT_FALSE(parts_near_peaks(peaks.slice(0, 0, 1), parts.slice(0, 0, 1), 224, 224, settings).item<bool>());
}

TEST(Localisation, PurityPatchesFollowPipNetsStride) {
  // 224 px over a 7 x 7 grid with 32-px patches: stride round(192 / 6) = 32.
  const PixelBox first = purity_patch(0, 0, 7, 7, 224, 224, 32);
  EXPECT_EQ(std::vector<int64_t>({first.y0, first.y1, first.x0, first.x1}), std::vector<int64_t>({0, 32, 0, 32}));
  const PixelBox middle = purity_patch(3, 5, 7, 7, 224, 224, 32);
  EXPECT_EQ(std::vector<int64_t>({middle.y0, middle.y1, middle.x0, middle.x1}), std::vector<int64_t>({96, 128, 160, 192}));
  // 14 x 14: stride round(192 / 13) = 15; the last cell is shifted inside: 192 .. 224.
  const PixelBox last = purity_patch(13, 12, 14, 14, 224, 224, 32);
  EXPECT_EQ(std::vector<int64_t>({last.y0, last.y1, last.x0, last.x1}), std::vector<int64_t>({192, 224, 180, 212}));
}

// --- synthparts and the metrics -----------------------------------------------------------------

constexpr int64_t kImage = 48, kStride = 4, kGrid = kImage / kStride;

struct Split {
  Batch data;
  int64_t size = 0;
};

struct SynthData {
  std::shared_ptr<Dataset> dataset;
  Split train, test;
  std::vector<std::vector<int64_t>> class_parts;
};

const SynthData& synth_data() {
  static const SynthData data = [] {
    SynthData out;
    auto& registry = testing::builtin_registry();
    Params params = Params::defaults(registry.datasets.find("synthparts")->schema);
    params.set("classes", int64_t{6});
    params.set("train_per_class", int64_t{40});
    params.set("test_per_class", int64_t{20});
    params.set("parts", int64_t{8});
    params.set("parts_per_class", int64_t{3});
    params.set("image_size", kImage);
    params.set("seed", int64_t{4});
    out.dataset = *registry.datasets.build("synthparts", params, {});
    for (auto* split : {&out.train, &out.test}) {
      const std::string name = split == &out.train ? "train" : "test";
      split->size = out.dataset->size(name);
      split->data = *out.dataset->get_eval_batch(name, torch::arange(split->size, torch::kInt64));
    }
    datasets::SynthPartsConfig config;
    config.classes = 6;
    config.parts = 8;
    config.parts_per_class = 3;
    config.seed = 4;
    const auto generator = *datasets::SynthParts::create(config);
    for (int64_t c = 0; c < 6; ++c) out.class_parts.push_back(generator.class_parts(c));
    return out;
  }();
  return data;
}

// The oracle: prototype p is part type p; its map is a Gaussian bump on the part's keypoint at
// feature resolution (cell centres at 4 r + 1.5), wherever the part is drawn (visible or not).
torch::Tensor oracle_maps(const torch::Tensor& parts) {
  const int64_t b = parts.size(0), k = parts.size(1);
  const torch::Tensor centres = torch::arange(kGrid, torch::kFloat32) * kStride + (kStride - 1) / 2.0;
  const torch::Tensor x = parts.select(2, 0).view({b, k, 1, 1}), y = parts.select(2, 1).view({b, k, 1, 1});
  const torch::Tensor dy = centres.view({1, 1, kGrid, 1}) - y, dx = centres.view({1, 1, 1, kGrid}) - x;
  const torch::Tensor drawn = (parts.select(2, 0).abs() + parts.select(2, 1).abs()).gt(0).view({b, k, 1, 1});
  return torch::exp(-(dy * dy + dx * dx) / (2 * 3.0 * 3.0)) * drawn.to(torch::kFloat32);
}

// W[c, p] = 1 when part p makes up class c.
torch::Tensor oracle_weights() {
  const auto& data = synth_data();
  torch::Tensor w = torch::zeros({6, 8});
  for (int64_t c = 0; c < 6; ++c) {
    for (int64_t p : data.class_parts[static_cast<size_t>(c)]) w[c][p] = 1;
  }
  return w;
}

EvalContext context_for(const torch::Tensor& class_weights, int64_t height = kImage, int64_t width = kImage) {
  EvalContext context;
  context.split = "test";
  context.train_split = "train";
  context.dataset = &synth_data().dataset->info();
  context.class_weights = class_weights;
  context.image_height = height;
  context.image_width = width;
  context.feature_height = height / kStride;
  context.feature_width = width / kStride;
  return context;
}

// Batches of `split` with `maps` as the similarity, fed to `metric` in chunks of `chunk`.
void feed(Metric& metric, const std::string& split_name, const Split& split, const torch::Tensor& maps,
          int64_t begin = 0, int64_t end = -1, int64_t chunk = 37) {
  if (end < 0) end = split.size;
  for (int64_t a = begin; a < end; a += chunk) {
    const int64_t b = std::min(end, a + chunk);
    EvalBatch batch;
    batch.split = split_name;
    batch.indices = torch::arange(a, b, torch::kInt64);
    batch.labels = split.data.labels.slice(0, a, b);
    batch.parts = split.data.parts.slice(0, a, b);
    batch.images = split.data.images.slice(0, a, b);
    batch.similarity = maps.slice(0, a, b);
    batch.presence = std::get<0>(batch.similarity.flatten(2).max(2));
    ASSERT_TRUE(metric.update(batch).ok());
  }
}

std::shared_ptr<Metric> build_metric(const std::string& type, const std::map<std::string, ParamValue>& values) {
  auto& registry = testing::builtin_registry();
  Params params = Params::defaults(registry.metrics.find(type)->schema);
  for (const auto& [key, value] : values) params.set(key, value);
  auto metric = registry.metrics.build(type, params, {});
  EXPECT_TRUE(metric.ok()) << metric.status();
  return *metric;
}

json computed(Metric& metric) {
  auto out = metric.compute();
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? (*out)["values"] : json();
}

TEST(InterpretabilityMetrics, AnOracleHeadScoresPurityOneAndConsistencyHundred) {
  const auto& data = synth_data();
  const EvalContext context = context_for(oracle_weights());
  auto consistency = build_metric("consistency", {{"half_size", int64_t{6}}});
  ASSERT_TRUE(consistency->begin(context).ok());
  feed(*consistency, "test", data.test, oracle_maps(data.test.data.parts));
  const json c = computed(*consistency);
  EXPECT_EQ(c["evaluated_prototypes"], 8);
  EXPECT_DOUBLE_EQ(c["consistency"].get<double>(), 100.0);
  // The oracle level: a 4-px grid puts a peak within 2 px of every keypoint, inside the +-6 region.
  EXPECT_DOUBLE_EQ(c["consistency_oracle"].get<double>(), 100.0);
  EXPECT_DOUBLE_EQ(c["best_part_ratio_oracle"].get<double>(), 1.0);
  EXPECT_LT(c["mean_part_ratio_chance"].get<double>(), 0.35);

  // patch 8 on a 12-cell grid over 48 px: PIP-Net's stride round(40 / 11) = 4 = the feature stride.
  auto purity = build_metric("purity", {{"patch_size", int64_t{8}}});
  ASSERT_TRUE(purity->begin(context).ok());
  feed(*purity, "train", data.train, oracle_maps(data.train.data.parts));
  const json p = computed(*purity);
  EXPECT_EQ(p["evaluated_prototypes"], 8);
  EXPECT_DOUBLE_EQ(p["purity"].get<double>(), 1.0);
  EXPECT_EQ(p["pure_prototypes"], 8);
  EXPECT_DOUBLE_EQ(p["purity_oracle"].get<double>(), 1.0);  // the cell holding a keypoint: its 8-px patch does
  EXPECT_LT(p["purity_chance"].get<double>(), 0.5);
}

// The same sizes given in cells (4 px a cell: 12 cells over 48 px) give the same values as in
// pixels, and the record says what they resolved to.
TEST(InterpretabilityMetrics, SizesInCellsGiveThePixelSizesTheyStandFor) {
  const auto& data = synth_data();
  const EvalContext context = context_for(oracle_weights());
  const auto noisy = oracle_maps(data.test.data.parts) + 0.5 * torch::rand({data.test.data.parts.size(0), 8, kGrid, kGrid});
  json values[2], settings;
  int i = 0;
  for (const auto& params : {std::map<std::string, ParamValue>{{"half_size", int64_t{8}}, {"patch_size", int64_t{8}}},
                             std::map<std::string, ParamValue>{{"half_size", int64_t{2}}, {"patch_size", int64_t{2}},
                                                          {"size_unit", std::string("cells")}}}) {
    auto consistency = build_metric("consistency", params);
    ASSERT_TRUE(consistency->begin(context).ok());
    feed(*consistency, "test", data.test, noisy);
    values[i++] = computed(*consistency);
    settings = (*consistency->compute())["settings"];
  }
  EXPECT_DOUBLE_EQ(values[0]["consistency"].get<double>(), values[1]["consistency"].get<double>());
  EXPECT_DOUBLE_EQ(values[0]["mean_part_ratio"].get<double>(), values[1]["mean_part_ratio"].get<double>());
  EXPECT_DOUBLE_EQ(values[0]["consistency_chance"].get<double>(), values[1]["consistency_chance"].get<double>());
  EXPECT_DOUBLE_EQ(settings["pixels_per_cell"].get<double>(), 4.0) << settings.dump();
  EXPECT_EQ(settings["half_size"], 8);
}

// Peaks uniform over the pixels (maps at input resolution, random): the chance that a part lies
// in the region, counted from the keypoint alone.
double region_chance(float x, float y, int64_t half) {
  auto span = [&](float v) {
    const auto c = static_cast<int64_t>(v);
    return static_cast<double>(std::min(kImage - 1, c + half) - std::max<int64_t>(0, c - half) + 1);
  };
  return span(x) * span(y) / static_cast<double>(kImage * kImage);
}

// PIP-Net's patches on a 48-cell grid over 48 px, 8 wide: cell r covers r .. r + 8, the last ones
// shifted to 40 .. 48. The fraction of cells whose patch holds the keypoint, per axis.
double patch_chance(float x, float y) {
  auto covering = [&](float v) {
    const auto c = static_cast<int64_t>(v);
    int64_t n = 0;
    for (int64_t r = 0; r < kImage; ++r) {
      int64_t lo = r, hi = r + 8;
      if (r == kImage - 1 || hi > kImage) lo = kImage - 8, hi = kImage;
      n += (c >= lo && c <= hi) ? 1 : 0;
    }
    return static_cast<double>(n) / kImage;
  };
  return covering(x) * covering(y);
}

TEST(InterpretabilityMetrics, RandomPrototypesScoreTheChanceLevelOfThePartGeometry) {
  const auto& data = synth_data();
  const int64_t prototypes = 64, half = 6;
  const EvalContext context = context_for(torch::ones({6, prototypes}));
  torch::manual_seed(7);
  auto consistency = build_metric("consistency", {{"half_size", half}});
  ASSERT_TRUE(consistency->begin(context).ok());
  feed(*consistency, "test", data.test, torch::rand({data.test.size, prototypes, kImage, kImage}));
  // Every prototype sees every test image: the expected ratio of part k is its chance averaged
  // over the images where it is visible; averaged again over the parts.
  const auto parts = data.test.data.parts;
  double chance = 0;
  int64_t counted = 0;
  for (int64_t k = 0; k < parts.size(1); ++k) {
    double sum = 0;
    int64_t visible = 0;
    for (int64_t i = 0; i < parts.size(0); ++i) {
      if (parts[i][k][2].item<float>() < 0.5F) continue;
      sum += region_chance(parts[i][k][0].item<float>(), parts[i][k][1].item<float>(), half);
      ++visible;
    }
    if (visible > 0) chance += sum / static_cast<double>(visible), ++counted;
  }
  chance /= static_cast<double>(counted);
  const json c = computed(*consistency);
  EXPECT_NEAR(c["mean_part_ratio"].get<double>(), chance, 0.01);
  EXPECT_LT(chance, 0.2);
  EXPECT_DOUBLE_EQ(c["consistency"].get<double>(), 0.0);  // no part comes near 0.8 by chance
  // The metric's own chance level: random cells of this input-resolution grid are random pixels.
  EXPECT_NEAR(c["mean_part_ratio_chance"].get<double>(), chance, 0.01);
  EXPECT_DOUBLE_EQ(c["consistency_chance"].get<double>(), 0.0);

  // Purity over every training image (top_k = all): per part, the mean chance over the images
  // where it is visible; a prototype's purity is its best part, within sampling noise.
  const auto train_parts = data.train.data.parts;
  double best_chance = 0;
  for (int64_t k = 0; k < train_parts.size(1); ++k) {
    double sum = 0;
    int64_t visible = 0;
    for (int64_t i = 0; i < train_parts.size(0); ++i) {
      if (train_parts[i][k][2].item<float>() < 0.5F) continue;
      sum += patch_chance(train_parts[i][k][0].item<float>(), train_parts[i][k][1].item<float>());
      ++visible;
    }
    if (visible > 0) best_chance = std::max(best_chance, sum / static_cast<double>(visible));
  }
  auto purity = build_metric("purity", {{"patch_size", int64_t{8}}, {"top_k", data.train.size}});
  ASSERT_TRUE(purity->begin(context).ok());
  feed(*purity, "train", data.train, torch::rand({data.train.size, prototypes, kImage, kImage}));
  const json p = computed(*purity);
  EXPECT_NEAR(p["purity"].get<double>(), best_chance, 0.04);
  EXPECT_LT(p["purity"].get<double>(), 0.25);
  // Its own chance level is the same estimator on random cells: a prototype's best of 8 noisy
  // part ratios sits above the mean chance by about the same amount for both.
  EXPECT_NEAR(p["purity_chance"].get<double>(), p["purity"].get<double>(), 0.02);
  EXPECT_GT(p["purity_chance"].get<double>(), best_chance - 0.01);
}

// The best part's share of visible keypoints (truncated to pixels) for which `hit(x, y)` holds.
double best_part_ratio(const torch::Tensor& parts, const std::function<bool(int64_t, int64_t)>& hit) {
  double best = 0;
  for (int64_t k = 0; k < parts.size(1); ++k) {
    int64_t hits = 0, visible = 0;
    for (int64_t i = 0; i < parts.size(0); ++i) {
      if (parts[i][k][2].item<float>() <= 0.5F) continue;
      ++visible;
      hits += hit(static_cast<int64_t>(parts[i][k][0].item<float>()), static_cast<int64_t>(parts[i][k][1].item<float>())) ? 1 : 0;
    }
    if (visible > 0) best = std::max(best, static_cast<double>(hits) / static_cast<double>(visible));
  }
  return best;
}

// The oracle level from the part geometry alone, computed here with PyTorch's bicubic (not the
// metric's OpenCV): a 16-cell grid over 48 px puts each cell's peak on pixel 3 r + 1 (no ties);
// with half_size 0 a part counts only when its keypoint is that very pixel.
TEST(InterpretabilityMetrics, TheOracleLevelFollowsThePartGeometry) {
  const auto& data = synth_data();
  const int64_t grid = 16, cells = grid * grid, prototypes = 4;
  const EvalContext context = context_for(torch::ones({6, prototypes}));
  auto consistency = build_metric("consistency", {{"half_size", int64_t{0}}});
  ASSERT_TRUE(consistency->begin(context).ok());
  torch::manual_seed(3);
  feed(*consistency, "test", data.test, torch::rand({data.test.size, prototypes, grid, grid}));
  const json c = computed(*consistency);

  const torch::Tensor up = torch::upsample_bicubic2d(torch::eye(cells).view({cells, 1, grid, grid}), {kImage, kImage}, false);
  const torch::Tensor flat_peak = up.flatten(1).argmax(1);  // row-major first maximum
  const torch::Tensor rows = torch::div(flat_peak, kImage, "floor"), columns = flat_peak.remainder(kImage);
  const double best = best_part_ratio(data.test.data.parts, [&](int64_t x, int64_t y) {
    const int64_t nearest = torch::maximum((rows - y).abs(), (columns - x).abs()).argmin().item<int64_t>();
    return rows[nearest].item<int64_t>() == y && columns[nearest].item<int64_t>() == x;
  });
  EXPECT_NEAR(c["best_part_ratio_oracle"].get<double>(), best, 1e-12);
  EXPECT_GT(best, 0.0);
  EXPECT_LT(best, 0.5);
  EXPECT_DOUBLE_EQ(c["consistency_oracle"].get<double>(), best >= 0.8 ? 100.0 : 0.0);

  // Purity's oracle: the peak at the cell holding the keypoint, floor(y / 4) on a 12-cell grid;
  // PIP-Net's 2-px patch of cell r spans 4 r .. 4 r + 2 (skip round(46 / 11) = 4), so a keypoint
  // 3 px into its cell is missed. Every training image is a top image of every prototype.
  auto purity = build_metric("purity", {{"patch_size", int64_t{2}}, {"top_k", data.train.size}});
  ASSERT_TRUE(purity->begin(context).ok());
  feed(*purity, "train", data.train, torch::rand({data.train.size, prototypes, kGrid, kGrid}));
  const json p = computed(*purity);
  const auto train_parts = data.train.data.parts;
  const double best_patch = best_part_ratio(train_parts, [](int64_t x, int64_t y) { return y % kStride <= 2 && x % kStride <= 2; });
  EXPECT_NEAR(p["purity_oracle"].get<double>(), best_patch, 1e-12);
  EXPECT_GT(best_patch, 0.3);
  EXPECT_LT(best_patch, 0.9);

  // Anchored on the cell's centre 4 r + 2, the 2-px patch spans 4 r + 1 .. 4 r + 3 instead.
  auto centred = build_metric("purity", {{"patch_size", int64_t{2}}, {"top_k", data.train.size},
                                         {"anchor", std::string("cell_centre")}});
  ASSERT_TRUE(centred->begin(context).ok());
  feed(*centred, "train", data.train, torch::rand({data.train.size, prototypes, kGrid, kGrid}));
  const double best_centred =
      best_part_ratio(train_parts, [](int64_t x, int64_t y) { return y % kStride >= 1 && x % kStride >= 1; });
  EXPECT_NEAR(computed(*centred)["purity_oracle"].get<double>(), best_centred, 1e-12);
  EXPECT_NE(best_centred, best_patch);
}

TEST(InterpretabilityMetrics, MergedShardsEqualTheWholeSplit) {
  const auto& data = synth_data();
  const EvalContext context = context_for(oracle_weights());
  torch::manual_seed(9);
  const torch::Tensor test_maps = oracle_maps(data.test.data.parts) + 0.3 * torch::rand({data.test.size, 8, kGrid, kGrid});
  const torch::Tensor train_maps = oracle_maps(data.train.data.parts) + 0.3 * torch::rand({data.train.size, 8, kGrid, kGrid});
  for (const std::string type : {"consistency", "purity"}) {
    const bool train = type == "purity";
    const Split& split = train ? data.train : data.test;
    const torch::Tensor& maps = train ? train_maps : test_maps;
    auto whole = build_metric(type, {{"half_size", int64_t{6}}, {"patch_size", int64_t{8}}});
    auto first = build_metric(type, {{"half_size", int64_t{6}}, {"patch_size", int64_t{8}}});
    auto second = build_metric(type, {{"half_size", int64_t{6}}, {"patch_size", int64_t{8}}});
    for (auto* m : {&whole, &first, &second}) ASSERT_TRUE((*m)->begin(context).ok());
    feed(*whole, train ? "train" : "test", split, maps);
    feed(*first, train ? "train" : "test", split, maps, 0, split.size / 3);
    feed(*second, train ? "train" : "test", split, maps, split.size / 3, split.size);
    ASSERT_TRUE(first->merge(*second).ok());
    EXPECT_EQ(computed(*whole).dump(), computed(*first).dump()) << type;
  }
}

TEST(InterpretabilityMetrics, MetricsThatNeedPartsRefuseADatasetWithout) {
  DatasetInfo info;
  info.name = "fashion_mnist";
  EvalContext context;
  context.dataset = &info;
  context.class_weights = torch::ones({2, 3});
  for (const std::string type : {"consistency", "stability", "purity"}) {
    const absl::Status status = build_metric(type, {})->begin(context);
    EXPECT_EQ(std::string(status.message()),
              "metric '" + type + "' needs part keypoints, and dataset 'fashion_mnist' has none");
  }
}

// --- a small real model: stability, sizes and grounding ---------------------------------------


TEST(InterpretabilityMetrics, StabilityIsHundredWithoutNoiseAndFallsAsTheNoiseGrows) {
  const auto& data = synth_data();
  torch::manual_seed(11);
  Model model;
  model.backbone = std::make_shared<ConvBackbone>();
  model.head = std::make_shared<CosineHead>(torch::randn({6, 8}), torch::ones({6, 6}));
  EvalContext context = context_for(torch::ones({6, 6}));
  context.model = &model;
  context.forward_images = [&](const torch::Tensor& images) {
    return model.head->forward(model.backbone->features(images));
  };
  torch::NoGradGuard no_grad;
  const torch::Tensor maps = context.forward_images(data.test.data.images).similarity;
  std::vector<double> scores;
  for (double noise : {0.0, 0.1, 1.0}) {
    auto stability = build_metric("stability", {{"half_size", int64_t{6}}, {"noise_std", noise}, {"noise_clip", 0.0}});
    ASSERT_TRUE(stability->begin(context).ok());
    feed(*stability, "test", data.test, maps);
    scores.push_back(computed(*stability)["stability"].get<double>());
  }
  EXPECT_DOUBLE_EQ(scores[0], 100.0);
  EXPECT_LT(scores[1], scores[0]);
  EXPECT_LT(scores[2], scores[1]);
  // Comparing sums forgives a part swapped for another: never less stable than element-wise.
  auto by_sum = build_metric("stability", {{"half_size", int64_t{6}}, {"noise_std", 1.0}, {"noise_clip", 0.0},
                                           {"compare", std::string("sum")}});
  ASSERT_TRUE(by_sum->begin(context).ok());
  feed(*by_sum, "test", data.test, maps);
  EXPECT_GE(computed(*by_sum)["stability"].get<double>(), scores[2]);
}

// Stability's chance level: a model whose maps peak at a random cell, drawn again under noise, is
// stable on an (image, prototype) pair when both peaks catch the same parts. On an input-resolution
// grid that chance is, per image, the sum over part sets v of P(v)^2, P(v) the fraction of pixels
// whose region catches exactly v: computed here from the keypoints alone.
TEST(InterpretabilityMetrics, StabilitysChanceLevelIsTheChanceThatTwoRandomPeaksCatchTheSameParts) {
  const auto& data = synth_data();
  const int64_t prototypes = 64, half = 6;
  EvalContext context = context_for(torch::ones({6, prototypes}));
  context.forward_images = [&](const torch::Tensor& images) {
    HeadOutput out;
    out.similarity = torch::rand({images.size(0), prototypes, kImage, kImage});
    return out;
  };
  torch::manual_seed(8);
  auto stability = build_metric("stability", {{"half_size", half}});
  ASSERT_TRUE(stability->begin(context).ok());
  feed(*stability, "test", data.test, torch::rand({data.test.size, prototypes, kImage, kImage}));
  const auto parts = data.test.data.parts;
  double expected = 0;
  for (int64_t i = 0; i < parts.size(0); ++i) {
    std::map<std::vector<bool>, int64_t> sets;
    for (int64_t y = 0; y < kImage; ++y) {
      for (int64_t x = 0; x < kImage; ++x) {
        std::vector<bool> caught;
        for (int64_t k = 0; k < parts.size(1); ++k) {
          const auto kx = static_cast<int64_t>(parts[i][k][0].item<float>());
          const auto ky = static_cast<int64_t>(parts[i][k][1].item<float>());
          caught.push_back(parts[i][k][2].item<float>() >= 0.5F && ky >= std::max<int64_t>(0, y - half) &&
                           ky <= std::min(kImage, y + half) && kx >= std::max<int64_t>(0, x - half) &&
                           kx <= std::min(kImage, x + half));
        }
        ++sets[caught];
      }
    }
    for (const auto& [set, count] : sets) expected += std::pow(static_cast<double>(count) / (kImage * kImage), 2);
  }
  expected = 100.0 * expected / static_cast<double>(parts.size(0));
  const json c = computed(*stability);
  // 120 images x 64 prototypes of Bernoulli draws: a standard error well under a point.
  EXPECT_NEAR(c["stability_chance"].get<double>(), expected, 2.0);
  EXPECT_GT(expected, 20.0);  // many pixels catch no part at all: random peaks agree on "nothing" often
  EXPECT_LT(expected, 90.0);
  EXPECT_DOUBLE_EQ(c["stability_oracle"].get<double>(), 100.0);
}

TEST(InterpretabilityMetrics, SizesEqualHandCounts) {
  const torch::Tensor weights = torch::tensor({{0.5f, 0.f, 0.0005f, 2.f}, {0.f, 0.f, 0.2f, 0.f}});
  EvalContext context;
  context.class_weights = weights;
  auto sizes = build_metric("sizes", {});
  ASSERT_TRUE(sizes->begin(context).ok());
  EvalBatch batch;
  batch.labels = torch::tensor({0, 1, 0}, torch::kInt64);
  batch.logits = torch::tensor({{1.f, 0.f}, {0.f, 1.f}, {1.f, 0.f}});
  batch.presence = torch::tensor({{1.f, 1.f, 1.f, 1e-4f}, {0.5f, 0.5f, 0.5f, 0.5f}, {1.f, 1.f, 1.f, 1.f}});
  ASSERT_TRUE(sizes->update(batch).ok());
  const json v = computed(*sizes);
  EXPECT_EQ(v["global_size"], 3);                      // prototypes 0, 2 and 3 have a weight > 1e-3
  EXPECT_DOUBLE_EQ(v["sparsity"].get<double>(), 5.0 / 8);  // 0, 0.0005, 0, 0, 0 of 8 weights
  EXPECT_DOUBLE_EQ(v["local_size_per_class"].get<double>(), 1.5);  // {0.5, 2} and {0.2}
  // Image 0 (class 0): 0.5 counts, 0.0005 and 2e-4 do not; image 1 (class 1): 0.1; image 2: 0.5, 2.
  EXPECT_DOUBLE_EQ(v["local_size_per_image"].get<double>(), 4.0 / 3);
}

TEST(InterpretabilityMetrics, GroundingIsTheMeanTopCosineToTrainingVectors) {
  torch::manual_seed(13);
  const torch::Tensor features = torch::randn({20, 8, 5, 5});
  const torch::Tensor rows = features.permute({0, 2, 3, 1}).reshape({-1, 8});
  // Two prototypes are real feature vectors, three are random.
  const torch::Tensor prototypes = torch::cat({rows.slice(0, 7, 8), rows.slice(0, 311, 312), torch::randn({3, 8})});
  Model model;
  model.head = std::make_shared<CosineHead>(prototypes, torch::ones({2, 5}));
  EvalContext context;
  context.model = &model;
  context.class_weights = torch::ones({2, 5});
  auto grounding = build_metric("grounding", {{"top_k", int64_t{10}}});
  ASSERT_TRUE(grounding->begin(context).ok());
  for (int64_t a = 0; a < 20; a += 6) {
    EvalBatch batch;
    batch.split = "train";
    batch.features = features.slice(0, a, std::min<int64_t>(20, a + 6));
    ASSERT_TRUE(grounding->update(batch).ok());
  }
  // Brute force: every cosine, sorted.
  std::vector<double> per_prototype;
  for (int64_t p = 0; p < 5; ++p) {
    std::vector<double> cosines;
    for (int64_t r = 0; r < rows.size(0); ++r) {
      const double dot = rows[r].dot(prototypes[p]).item<double>();
      cosines.push_back(dot / (std::max(rows[r].norm().item<double>(), 1e-6) * std::max(prototypes[p].norm().item<double>(), 1e-6)));
    }
    std::sort(cosines.rbegin(), cosines.rend());
    double sum = 0;
    for (int i = 0; i < 10; ++i) sum += cosines[static_cast<size_t>(i)];
    per_prototype.push_back(sum / 10);
  }
  const json v = computed(*grounding);
  double mean = 0;
  for (double g : per_prototype) mean += g / 5;
  EXPECT_NEAR(v["grounding"].get<double>(), mean, 1e-5);
  EXPECT_NEAR(v["grounding_min"].get<double>(), *std::min_element(per_prototype.begin(), per_prototype.end()), 1e-5);
  EXPECT_GT(per_prototype[0], per_prototype[2]);  // a real vector is nearer the data than a random one
}

// Misalignment: images of one random 12 px texture on black; features see the image through a
// bias-free random 3x3 conv (SquareBackbone), the prototype is the texture centre's feature. The aligned backbone's activation
// lies on the square, inside the protected region: an attack outside it cannot lower it. The
// shifted backbone sees the image moved by 24 px, so its activation points 24 px away from its
// evidence, which the attack may then change: the metric catches it. And the PGD attack lowers
// the activation strictly more than its random start alone, with the same budget.
json misalignment(int64_t shift, const std::string& attack) {
  torch::manual_seed(21);
  const int64_t n = 24;
  // One random 12 x 12 texture, pasted at a different place in every image.
  const torch::Tensor texture = torch::rand({3, 12, 12});
  torch::Tensor images = torch::zeros({n, 3, kImage, kImage});
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = 4 + (i * 7) % 28, x = 6 + (i * 11) % 26;
    images.index_put_({i, torch::indexing::Slice(), torch::indexing::Slice(y, y + 12), torch::indexing::Slice(x, x + 12)},
                      texture);
  }
  Model model;
  auto backbone = std::make_shared<SquareBackbone>(shift);
  model.backbone = backbone;
  torch::Tensor prototype;
  {
    torch::NoGradGuard no_grad;
    // The feature of the texture's centre, as the unshifted view sees it.
    const torch::Tensor centre = torch::nn::functional::pad(texture.unsqueeze(0), torch::nn::functional::PadFuncOptions({1, 1, 1, 1}));
    prototype = backbone->unshifted(centre).select(3, 6).select(2, 6);
  }
  // One prototype for the square, one that fires on black (a constant direction never equals 0).
  model.head = std::make_shared<CosineHead>(torch::cat({prototype, torch::ones({1, 8})}), torch::ones({2, 2}));
  EvalContext context = context_for(torch::ones({2, 2}));
  context.model = &model;
  context.forward_images = [&](const torch::Tensor& x) { return model.head->forward(model.backbone->features(x)); };
  auto metric = build_metric("spatial_misalignment", {{"attack", attack}});
  EXPECT_TRUE(metric->begin(context).ok());
  EvalBatch batch;
  batch.split = "test";
  batch.indices = torch::arange(n, torch::kInt64);
  batch.labels = torch::zeros({n}, torch::kInt64);
  batch.images = images;
  {
    torch::NoGradGuard no_grad;
    const HeadOutput out = context.forward_images(images);
    batch.similarity = out.similarity;
    batch.presence = out.presence;
    batch.logits = out.logits;
  }
  EXPECT_TRUE(metric->update(batch).ok());
  return computed(*metric);
}

TEST(InterpretabilityMetrics, MisalignmentCatchesAnActivationMovedOffItsEvidence) {
  const json aligned = misalignment(0, "pgd"), shifted = misalignment(24, "pgd");
  const json random_start = misalignment(24, "random_start");
  EXPECT_NEAR(aligned["pac"].get<double>(), 0.0, 1.0);  // the evidence is protected
  EXPECT_GT(shifted["pac"].get<double>(), 5.0);  // measured 8.1: caught
  EXPECT_GT(shifted["pac"].get<double>(), random_start["pac"].get<double>() + 3.0);  // measured 1.5
  EXPECT_EQ(shifted["images"], 24);
}

// The reference quirks are settings: left/right merging in consistency (the reference does not
// merge; purity does) and purity's denominator (visible parts, PIP-Net; or all top images).
TEST(InterpretabilityMetrics, ReferenceQuirksAreOneSettingAway) {
  DatasetInfo info;
  info.name = "birds";
  info.has_parts = true;
  info.part_names = {"left eye", "right eye", "beak"};
  EvalContext context;
  context.dataset = &info;
  context.class_weights = torch::ones({1, 1});
  context.image_height = context.image_width = kImage;
  // One prototype peaking at (10, 10) on both images (maps at input resolution: no resampling).
  torch::Tensor maps = torch::zeros({2, 1, kImage, kImage});
  maps.index_put_({torch::indexing::Slice(), 0, 10, 10}, 1.0);
  // Image 0: the right eye at the peak, the left one far; image 1 the other way round.
  const torch::Tensor parts = torch::tensor({{{40.f, 40.f, 1.f}, {10.f, 10.f, 1.f}, {0.f, 0.f, 0.f}},
                                             {{10.f, 10.f, 1.f}, {40.f, 40.f, 1.f}, {0.f, 0.f, 0.f}}});
  EvalBatch batch;
  batch.split = "test";
  batch.indices = torch::arange(2, torch::kInt64);
  batch.labels = torch::zeros({2}, torch::kInt64);
  batch.parts = parts;
  batch.similarity = maps;
  batch.presence = torch::ones({2, 1});
  for (const bool merge : {false, true}) {
    auto consistency = build_metric("consistency", {{"half_size", int64_t{6}}, {"merge_left_right", merge}});
    ASSERT_TRUE(consistency->begin(context).ok());
    ASSERT_TRUE(consistency->update(batch).ok());
    // Unmerged: each eye is hit on 1 of its 2 visible images (0.5 < 0.8); merged: the eye 2 of 2.
    EXPECT_DOUBLE_EQ(computed(*consistency)["consistency"].get<double>(), merge ? 100.0 : 0.0) << merge;
  }
  // Purity over both images (top_k 2): image 1 has its left eye in the patch and no beak; the
  // beak is visible nowhere. With only the right eye visible on image 0, in the patch:
  batch.parts = torch::tensor({{{0.f, 0.f, 0.f}, {10.f, 10.f, 1.f}, {0.f, 0.f, 0.f}},
                               {{0.f, 0.f, 0.f}, {0.f, 0.f, 0.f}, {0.f, 0.f, 0.f}}});
  for (const std::string denominator : {"visible", "top_k"}) {
    auto purity = build_metric("purity", {{"patch_size", int64_t{8}}, {"top_k", int64_t{2}}, {"denominator", denominator}});
    ASSERT_TRUE(purity->begin(context).ok());
    EvalBatch train = batch;
    train.split = "train";
    ASSERT_TRUE(purity->update(train).ok());
    // The eye is hit on the one top image where it is visible: 1/1, or 1/2 of the top images.
    EXPECT_DOUBLE_EQ(computed(*purity)["purity"].get<double>(), denominator == "visible" ? 1.0 : 0.5) << denominator;
  }
}

}  // namespace
}  // namespace protoquant
