// FunnyBirds' protocols against ground truth. On synthparts (re-rendered exactly) the engine is
// driven by models and explainers whose right answers are known:
// - a model that reads exactly each class's parts (its logit: the weights of the class's parts
//   the image shows), explained by an oracle (importance: those weights), scores 1 on every
//   protocol, background independence included;
// - the same model with random importance sits at chance on the rank-based protocols (SD and TS
//   near 0.5) and below the oracle on completeness;
// - a model that reads only the background objects is caught by background independence (0).
// Then the pieces: minimal sufficient part sets by brute force, Spearman by hand, the prototype
// model's part importance on hand-made maps, and the metric through `protoquant evaluate`.
#include <random>
#include <set>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "metrics/funnybirds_protocols.h"
#include "metrics/part_importance.h"
#include "test_support.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;
using metrics::FunnyBirdsProtocols;
using metrics::FunnyBirdsSettings;
using metrics::ProtocolOutput;

std::shared_ptr<Dataset> clean_synthparts() {
  auto& registry = testing::builtin_registry();
  Params params = Params::defaults(registry.datasets.find("synthparts")->schema);
  params.set("classes", int64_t{8});
  params.set("parts", int64_t{10});
  params.set("parts_per_class", int64_t{4});
  params.set("test_per_class", int64_t{12});
  params.set("missing", 0.0);
  params.set("occlusion", 0.0);
  params.set("train_transform", std::vector<std::string>{"center_crop:56"});
  params.set("eval_transform", std::vector<std::string>{"center_crop:56"});
  auto dataset = registry.datasets.build("synthparts", params, {});
  EXPECT_TRUE(dataset.ok()) << dataset.status();
  return dataset.ok() ? *dataset : nullptr;
}

FunnyBirdsSettings reference_settings() {
  FunnyBirdsSettings settings;
  for (int t = 0; t < 80; ++t) settings.thresholds.push_back(0.01 + 0.49 * t / 79.0);
  settings.render_batch = 100;
  return settings;
}

double part_weight(int64_t p) { return 1.0 + 0.25 * static_cast<double>(p); }

// Which parts and objects each image of the batch shows: B x (1 + K + objects) bool.
torch::Tensor shown(const torch::Tensor& columns, int64_t num_columns) {
  torch::Tensor out = torch::zeros({columns.size(0), num_columns}, torch::kBool);
  for (int64_t i = 0; i < columns.size(0); ++i) out[i].index_fill_(0, std::get<0>(torch::_unique(columns[i])), true);
  return out;
}

// class_parts as a C x (1 + K) weight matrix: w_p at column 1 + p for the class's parts.
torch::Tensor class_part_weights(const DatasetInfo& info) {
  const int64_t k = static_cast<int64_t>(info.part_names.size());
  torch::Tensor m = torch::zeros({info.num_classes, 1 + k}, torch::kFloat64);
  for (int64_t c = 0; c < info.num_classes; ++c) {
    for (int64_t p : info.class_parts[static_cast<size_t>(c)]) m[c][1 + p] = part_weight(p);
  }
  return m;
}

struct Scores {
  nlohmann::json values, settings;
};

enum class Explainer { kOracle, kRandom };
enum class Reads { kParts, kBackground };

Scores run_protocols(Dataset& data, Reads reads, Explainer explainer) {
  const DatasetInfo& info = data.info();
  const int64_t k = static_cast<int64_t>(info.part_names.size());
  const torch::Tensor weights = class_part_weights(info);  // C x (1 + K)
  std::mt19937_64 rng(7);
  metrics::ProtocolForward forward = [&](const Batch& batch, const torch::Tensor& columns, int64_t num_columns,
                                         bool explain) -> absl::StatusOr<ProtocolOutput> {
    const torch::Tensor seen = shown(columns, num_columns).to(torch::kFloat64);  // B x columns
    const int64_t b = columns.size(0);
    ProtocolOutput out;
    if (reads == Reads::kParts) {
      // Each class: the weights of its parts in the image; a last "no class" logit of 0.5 wins
      // when no part of any class is left, so that taking every part away changes the answer.
      const torch::Tensor logits = seen.slice(1, 0, 1 + k).matmul(weights.t());
      out.logits = torch::cat({logits, torch::full({b, 1}, 0.5, torch::kFloat64)}, 1);
    } else {
      // Every class: how many background objects the image shows.
      out.logits = seen.slice(1, 1 + k).sum(1, true).expand({b, info.num_classes}).contiguous();
    }
    if (explain) {
      torch::Tensor importance = torch::zeros({b, info.num_classes, num_columns}, torch::kFloat64);
      if (explainer == Explainer::kOracle) {
        importance.slice(2, 0, 1 + k).copy_(weights.unsqueeze(0) * seen.slice(1, 0, 1 + k).unsqueeze(1));
      } else {
        std::uniform_real_distribution<double> unit(0.0, 1.0);
        auto a = importance.accessor<double, 3>();
        for (int64_t i = 0; i < b; ++i) {
          for (int64_t c = 0; c < info.num_classes; ++c) {
            for (int64_t j = 0; j < num_columns; ++j) a[i][c][j] = unit(rng);
          }
        }
      }
      out.importance = importance;
    }
    return out;
  };
  metrics::ProtocolRender render = [&](const torch::Tensor& indices, const std::vector<Intervention>& what) {
    return data.get_intervened_batch("test", indices, what);
  };
  FunnyBirdsProtocols first(reference_settings(), info.class_parts, k), second(reference_settings(), info.class_parts, k);
  // Two shards merged through the partial state, as a data-parallel pass does.
  const int64_t n = data.size("test");
  EXPECT_TRUE(first.update(torch::arange(0, n / 2), forward, render, nullptr).ok());
  EXPECT_TRUE(second.update(torch::arange(n / 2, n), forward, render, nullptr).ok());
  FunnyBirdsProtocols merged(reference_settings(), info.class_parts, k);
  EXPECT_TRUE(merged.load_state(first.state()).ok());
  merged.merge(second);
  const nlohmann::json result = merged.compute();
  return {result["values"], result["settings"]};
}

TEST(FunnyBirds, AnOracleExplainingAModelThatReadsTheClassPartsScoresOneOnEveryProtocol) {
  auto data = clean_synthparts();
  ASSERT_NE(data, nullptr);
  const Scores s = run_protocols(*data, Reads::kParts, Explainer::kOracle);
  EXPECT_EQ(s.settings["images"].get<double>(), data->size("test"));
  for (const char* name : {"accuracy", "csdc", "pc", "dc", "distractibility", "background_independence",
                           "single_deletion", "target_sensitivity", "completeness", "mean"}) {
    ASSERT_TRUE(s.values[name].is_number()) << name << ": " << s.values;
    EXPECT_DOUBLE_EQ(s.values[name].get<double>(), 1.0) << name << ": " << s.values;
  }
  // Every protocol saw work: the images' objects, and images with a contrasting pair.
  EXPECT_GT(s.settings["background_objects"].get<double>(), 5.0 * data->size("test"));
  EXPECT_GT(s.settings["target_sensitivity_images"].get<double>(), 0.5 * data->size("test"));
  EXPECT_EQ(s.settings["target_sensitivity_assumption_failed"].get<double>(), 0.0);
}

TEST(FunnyBirds, RandomImportanceSitsAtChanceOnTheRankProtocols) {
  auto data = clean_synthparts();
  ASSERT_NE(data, nullptr);
  const Scores s = run_protocols(*data, Reads::kParts, Explainer::kRandom);
  // A random ranking correlates with nothing: SD's mapped Spearman and TS's coin flips at 0.5
  // (96 images: a standard error near 0.03 for both).
  EXPECT_NEAR(s.values["single_deletion"].get<double>(), 0.5, 0.1) << s.values;
  EXPECT_NEAR(s.values["target_sensitivity"].get<double>(), 0.5, 0.12) << s.values;
  EXPECT_LT(s.values["completeness"].get<double>(), 0.95) << s.values;
  EXPECT_LT(s.values["csdc"].get<double>(), 1.0) << s.values;
  // The model is the oracle's: its own properties do not move with the explainer.
  EXPECT_DOUBLE_EQ(s.values["accuracy"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(s.values["background_independence"].get<double>(), 1.0);
}

TEST(FunnyBirds, AModelThatReadsOnlyTheBackgroundIsCaughtByBackgroundIndependence) {
  auto data = clean_synthparts();
  ASSERT_NE(data, nullptr);
  const Scores s = run_protocols(*data, Reads::kBackground, Explainer::kOracle);
  // Taking one of an image's objects away lowers the count it reads by 1 in at most 15 (> 5 %),
  // unless that uncovers an object it hid entirely (under 1 % of them here).
  EXPECT_LT(s.values["background_independence"].get<double>(), 0.02) << s.values;
  EXPECT_GT(s.settings["background_objects"].get<double>(), 5.0 * data->size("test"));
}

TEST(FunnyBirds, MinimalSufficientPartSetsAreTheSmallestSetsNoOtherClassHas) {
  const std::vector<std::vector<int64_t>> classes = {{0, 1, 2}, {0, 1, 3}, {4, 5, 6}, {0, 4, 7}};
  using Sets = std::vector<std::vector<int64_t>>;
  EXPECT_EQ(metrics::minimal_sufficient_part_sets(classes, 0), (Sets{{2}}));
  EXPECT_EQ(metrics::minimal_sufficient_part_sets(classes, 2), (Sets{{5}, {6}}));
  EXPECT_EQ(metrics::minimal_sufficient_part_sets(classes, 3), (Sets{{7}, {0, 4}}));
  // Random class sets against brute force over every subset.
  std::mt19937_64 rng(3);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<std::vector<int64_t>> random_classes;
    std::set<std::vector<int64_t>> used;
    while (random_classes.size() < 6) {
      std::vector<int64_t> vocabulary = {0, 1, 2, 3, 4, 5, 6, 7};
      std::shuffle(vocabulary.begin(), vocabulary.end(), rng);
      std::vector<int64_t> chosen(vocabulary.begin(), vocabulary.begin() + 4);
      std::sort(chosen.begin(), chosen.end());
      if (used.insert(chosen).second) random_classes.push_back(chosen);
    }
    for (int64_t c = 0; c < 6; ++c) {
      const auto& own = random_classes[static_cast<size_t>(c)];
      auto sufficient = [&](const std::set<int64_t>& subset) {
        for (int64_t other = 0; other < 6; ++other) {
          if (other == c) continue;
          const auto& theirs = random_classes[static_cast<size_t>(other)];
          if (std::includes(theirs.begin(), theirs.end(), subset.begin(), subset.end())) return false;
        }
        return true;
      };
      std::set<std::set<int64_t>> expected;
      for (int mask = 1; mask < 16; ++mask) {
        std::set<int64_t> subset;
        for (int j = 0; j < 4; ++j) {
          if (mask >> j & 1) subset.insert(own[static_cast<size_t>(j)]);
        }
        if (!sufficient(subset)) continue;
        bool minimal = true;
        for (int64_t drop : subset) {
          std::set<int64_t> smaller = subset;
          smaller.erase(drop);
          if (!smaller.empty() && sufficient(smaller)) minimal = false;
        }
        if (minimal) expected.insert(subset);
      }
      std::set<std::set<int64_t>> got;
      for (const auto& set : metrics::minimal_sufficient_part_sets(random_classes, c)) got.emplace(set.begin(), set.end());
      EXPECT_EQ(got, expected) << "trial " << trial << " class " << c;
    }
  }
}

TEST(FunnyBirds, SpearmanIsTheRankCorrelationWithAverageRanksAndNanWhenConstant) {
  // 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 6 * 2 / 60.
  EXPECT_NEAR(metrics::spearman({1, 2, 3, 4}, {10, 30, 20, 40}), 0.8, 1e-12);
  EXPECT_NEAR(metrics::spearman({1, 2, 3}, {3, 2, 1}), -1.0, 1e-12);
  // Ties: ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4): Pearson of the ranks.
  EXPECT_NEAR(metrics::spearman({0, 5, 5, 9}, {1, 2, 3, 4}), 4.5 / std::sqrt(4.5 * 5.0), 1e-12);
  EXPECT_TRUE(std::isnan(metrics::spearman({1, 1, 1}, {1, 2, 3})));
}

// Two prototypes on a 2 x 2 grid over a 4 x 4 image whose left half is part 0 (column 1), the
// bottom-right cell part 1 (column 2), the rest background (column 0).
TEST(FunnyBirds, APrototypesEvidenceGoesToThePartItsMapPointsAt) {
  torch::Tensor columns = torch::zeros({1, 4, 4}, torch::kInt64);
  columns[0].slice(1, 0, 2).fill_(1);
  columns[0].slice(0, 2, 4).slice(1, 2, 4).fill_(2);
  torch::Tensor similarity = torch::zeros({1, 2, 2, 2});
  similarity[0][0][0][0] = 1.0;  // prototype 0 peaks in the top-left cell: part 0
  similarity[0][1][1][1] = 1.0;  // prototype 1 in the bottom-right cell: part 1
  const torch::Tensor presence = torch::tensor({{0.5F, 0.25F}});
  const torch::Tensor weights = torch::tensor({{2.0F, 0.0F}, {1.0F, 4.0F}});  // C x P
  LocalisationSettings cell;
  cell.anchor = Anchor::kCellCentre;
  const torch::Tensor peak = metrics::prototype_part_importance(similarity, presence, weights, columns, 3, cell,
                                                                metrics::ImportanceAssignment::kPeak);
  ASSERT_EQ(peak.sizes(), (std::vector<int64_t>{1, 2, 3}));
  // Class 0: 0.5 x 2 on part 0; class 1: 0.5 x 1 on part 0, 0.25 x 4 on part 1.
  EXPECT_TRUE(torch::allclose(peak[0], torch::tensor({{0.0F, 1.0F, 0.0F}, {0.0F, 0.5F, 1.0F}})));
  // By mass: a map that is 1 everywhere spreads its evidence by area (8, 4 and 4 of 16 pixels
  // for part 0, part 1 and the background); bilinear keeps a constant map constant.
  LocalisationSettings bilinear;
  bilinear.upsampling = Upsampling::kBilinear;
  const torch::Tensor flat = torch::ones({1, 2, 2, 2});
  const torch::Tensor mass = metrics::prototype_part_importance(flat, presence, weights, columns, 3, bilinear,
                                                                metrics::ImportanceAssignment::kMass);
  const torch::Tensor evidence = (presence * weights).sum(1);  // per class
  for (int64_t c = 0; c < 2; ++c) {
    EXPECT_NEAR(mass[0][c][0].item<float>(), evidence[c].item<float>() * 4 / 16, 1e-6);
    EXPECT_NEAR(mass[0][c][1].item<float>(), evidence[c].item<float>() * 8 / 16, 1e-6);
    EXPECT_NEAR(mass[0][c][2].item<float>(), evidence[c].item<float>() * 4 / 16, 1e-6);
  }
}

TEST(FunnyBirds, TheMetricRunsOnSynthpartsAndIsRefusedWhereImagesCannotBeReRendered) {
  testing::TempDir dir;
  const fs::path manifest = testing::tiny_manifest(dir, "synthparts.toml", "birds");
  const fs::path run = dir / "runs" / "birds";
  const auto trained = testing::run_cli("run " + manifest.string() + " --out " + run.string());
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  const fs::path dump = dir / "dump";
  const auto evaluated = testing::run_cli("evaluate " + run.string() +
                                          " --metric funnybirds:thresholds=20,anchor=cell_centre --dump " + dump.string());
  ASSERT_EQ(evaluated.exit_code, 0) << evaluated.output;
  const nlohmann::json results = testing::results_of(run);
  const nlohmann::json& values = results["metrics"]["funnybirds"];
  for (const char* name : {"accuracy", "csdc", "pc", "dc", "distractibility", "background_independence", "completeness"}) {
    ASSERT_TRUE(values[name].is_number()) << name << ": " << values;
    EXPECT_GE(values[name].get<double>(), 0.0) << name;
    EXPECT_LE(values[name].get<double>(), 1.0) << name;
  }
  // Its accuracy is the model's on the re-rendered originals: the accuracy metric's (up to an
  // image whose top two logits the stored features order otherwise).
  EXPECT_NEAR(values["accuracy"].get<double>(), results["metrics"]["accuracy"]["accuracy"].get<double>(), 0.05)
      << results["metrics"];
  EXPECT_TRUE(fs::exists(dump / "funnybirds" / "pc.npy"));

}

TEST(FunnyBirds, ADatasetThatCannotReRenderIsRefusedInOneLine) {
  auto& registry = testing::builtin_registry();
  const auto* entry = registry.metrics.find("funnybirds");
  ASSERT_NE(entry, nullptr);
  auto metric = registry.metrics.build("funnybirds", Params::defaults(entry->schema), {});
  ASSERT_TRUE(metric.ok()) << metric.status();
  DatasetInfo info;
  info.name = "fashion_mnist";
  EvalContext context;
  context.dataset = &info;
  context.forward_images = [](const torch::Tensor&) { return HeadOutput{}; };
  const absl::Status refused = (*metric)->begin(context);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(std::string(refused.message()).find("dataset 'fashion_mnist' cannot"), std::string::npos) << refused;
  EXPECT_EQ(std::string(refused.message()).find('\n'), std::string::npos);
}

}  // namespace
}  // namespace protoquant
