#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <numeric>

#include "protoquant/classification.h"

#include "test_support.h"

namespace protoquant {
namespace {

TEST(AccuracyMetric, TopOneAndTopKAgainstCounting) {
  Registry& registry = testing::builtin_registry();
  Params params = Params::defaults(registry.metrics.find("accuracy")->schema);
  params.set("top_k", int64_t{2});
  auto metric = registry.metrics.build("accuracy", params, {});
  ASSERT_TRUE(metric.ok());
  EvalBatch batch;
  batch.split = "test";
  batch.labels = torch::tensor({0, 1, 2, 2}, torch::kInt64);
  // Row 0: label first (top-1 hit); row 1: label second; row 2: label third; row 3: label first.
  batch.logits = torch::tensor({{3.f, 2.f, 1.f}, {3.f, 2.f, 1.f}, {3.f, 2.f, 1.f}, {0.f, 1.f, 5.f}});
  batch.blackbox_logits = torch::tensor({{1.f, 0.f, 0.f}, {0.f, 1.f, 0.f}, {0.f, 0.f, 1.f}, {1.f, 0.f, 0.f}});
  ASSERT_TRUE((*metric)->update(batch).ok());
  auto out = (*metric)->compute();
  ASSERT_TRUE(out.ok());
  EXPECT_DOUBLE_EQ((*out)["values"]["accuracy"].get<double>(), 2.0 / 4);
  EXPECT_DOUBLE_EQ((*out)["values"]["top2_accuracy"].get<double>(), 3.0 / 4);
  EXPECT_DOUBLE_EQ((*out)["values"]["blackbox_accuracy"].get<double>(), 3.0 / 4);
  EXPECT_EQ((*out)["settings"]["top_k"], 2);
}

// Independent of the formula: the mean over every tie-breaking order of the classes (all C!
// priority permutations) of "the label is among the first k when sorted by logit, then priority".
double expected_top_k_by_enumeration(const std::vector<std::vector<float>>& rows, const std::vector<int64_t>& labels,
                                     int64_t k) {
  double total = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    const auto& row = rows[r];
    std::vector<int> priority(row.size());
    std::iota(priority.begin(), priority.end(), 0);
    double hits = 0, orders = 0;
    do {
      std::vector<int> order(row.size());
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), [&](int a, int b) {
        return row[a] != row[b] ? row[a] > row[b] : priority[a] < priority[b];
      });
      const auto rank = std::find(order.begin(), order.end(), labels[r]) - order.begin();
      hits += rank < k ? 1 : 0;
      orders += 1;
    } while (std::next_permutation(priority.begin(), priority.end()));
    total += hits / orders;
  }
  return total / rows.size();
}

TEST(AccuracyMetric, TiesGetFractionalCreditNotAFullHit) {
  // Row 0: all equal (an edited head with zeroed weights); row 1: the label tied with one other
  // for first; row 2: tied for second with two others; row 3: a clear hit; row 4: a clear miss.
  const std::vector<std::vector<float>> rows = {
      {0, 0, 0, 0}, {2, 2, 1, 0}, {3, 1, 1, 1}, {0, 9, 1, 2}, {5, 1, 1, 1}};
  const std::vector<int64_t> labels = {2, 1, 3, 1, 2};
  torch::Tensor logits = torch::zeros({5, 4});
  for (int r = 0; r < 5; ++r)
    for (int c = 0; c < 4; ++c) logits[r][c] = rows[r][c];
  const torch::Tensor label_tensor = torch::tensor(labels, torch::kInt64);
  for (int64_t k : {1, 2, 3, 4}) {
    EXPECT_NEAR(top_k_accuracy(logits, label_tensor, k), expected_top_k_by_enumeration(rows, labels, k), 1e-12) << k;
  }
  // The constant row alone scores chance, k / C, not 1.
  EXPECT_NEAR(top_k_accuracy(torch::zeros({3, 4}), torch::tensor({0, 1, 3}, torch::kInt64), 1), 0.25, 1e-12);
  EXPECT_NEAR(top_k_accuracy(torch::zeros({3, 4}), torch::tensor({0, 1, 3}, torch::kInt64), 3), 0.75, 1e-12);
  // k past C counts every row; a NaN label logit is never a hit.
  EXPECT_DOUBLE_EQ(top_k_accuracy(logits, label_tensor, 9), 1.0);
  const auto nan_row = torch::tensor({{std::nanf(""), 1.f, 0.f}});
  EXPECT_DOUBLE_EQ(top_k_accuracy(nan_row, torch::tensor({0}, torch::kInt64), 3), 0.0);
}

TEST(AccuracyMetric, ZeroedHeadScoresChanceThroughThePlugin) {
  Registry& registry = testing::builtin_registry();
  auto metric = registry.metrics.build("accuracy", Params::defaults(registry.metrics.find("accuracy")->schema), {});
  ASSERT_TRUE(metric.ok());
  EvalBatch batch;
  batch.split = "test";
  batch.labels = torch::arange(10, torch::kInt64);
  batch.logits = torch::zeros({10, 10});
  ASSERT_TRUE((*metric)->update(batch).ok());
  auto out = (*metric)->compute();
  ASSERT_TRUE(out.ok());
  EXPECT_NEAR((*out)["values"]["accuracy"].get<double>(), 0.1, 1e-12);
  EXPECT_EQ((*out)["settings"]["ties"], "fractional");
}

// Streaming: batch by batch, and two shards merged, give the numbers of the whole split at once.
TEST(AccuracyMetric, BatchesAndMergedShardsEqualTheWholeSplit) {
  Registry& registry = testing::builtin_registry();
  const Params params = Params::defaults(registry.metrics.find("accuracy")->schema);
  torch::manual_seed(3);
  EvalBatch all;
  all.split = "test";
  all.labels = torch::randint(0, 6, {50}, torch::kInt64);
  all.logits = torch::randint(0, 3, {50, 6}).to(torch::kFloat32);  // many ties
  all.blackbox_logits = torch::randn({50, 6});
  auto slice = [&](int64_t a, int64_t b) {
    EvalBatch part = all;
    part.labels = all.labels.slice(0, a, b);
    part.logits = all.logits.slice(0, a, b);
    part.blackbox_logits = all.blackbox_logits.slice(0, a, b);
    return part;
  };
  auto whole = *registry.metrics.build("accuracy", params, {});
  auto first = *registry.metrics.build("accuracy", params, {});
  auto second = *registry.metrics.build("accuracy", params, {});
  ASSERT_TRUE(whole->update(all).ok());
  ASSERT_TRUE(first->update(slice(0, 17)).ok());
  ASSERT_TRUE(second->update(slice(17, 31)).ok());
  ASSERT_TRUE(second->update(slice(31, 50)).ok());
  ASSERT_TRUE(first->merge(*second).ok());
  const auto a = *whole->compute(), b = *first->compute();
  EXPECT_NEAR(a["values"]["accuracy"].get<double>(), top_k_accuracy(all.logits, all.labels, 1), 1e-12);
  for (const auto& name : {"accuracy", "top5_accuracy", "blackbox_accuracy", "blackbox_top5_accuracy"}) {
    EXPECT_NEAR(a["values"][name].get<double>(), b["values"][name].get<double>(), 1e-12) << name;
  }
}

}  // namespace
}  // namespace protoquant
