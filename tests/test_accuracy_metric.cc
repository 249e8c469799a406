#include <gtest/gtest.h>
#include <torch/torch.h>

#include "test_support.h"

namespace protoquant {
namespace {

TEST(AccuracyMetric, TopOneAndTopKAgainstCounting) {
  Registry& registry = testing::builtin_registry();
  Params params = Params::defaults(registry.metrics.find("accuracy")->schema);
  params.set("top_k", int64_t{2});
  auto metric = registry.metrics.build("accuracy", params, {});
  ASSERT_TRUE(metric.ok());
  EvalContext context;
  context.split = "test";
  context.labels = torch::tensor({0, 1, 2, 2}, torch::kInt64);
  // Row 0: label first (top-1 hit); row 1: label second; row 2: label third; row 3: label first.
  context.logits = torch::tensor({{3.f, 2.f, 1.f}, {3.f, 2.f, 1.f}, {3.f, 2.f, 1.f}, {0.f, 1.f, 5.f}});
  context.blackbox_logits = torch::tensor({{1.f, 0.f, 0.f}, {0.f, 1.f, 0.f}, {0.f, 0.f, 1.f}, {1.f, 0.f, 0.f}});
  auto out = (*metric)->evaluate(context);
  ASSERT_TRUE(out.ok());
  EXPECT_DOUBLE_EQ((*out)["values"]["accuracy"].get<double>(), 2.0 / 4);
  EXPECT_DOUBLE_EQ((*out)["values"]["top2_accuracy"].get<double>(), 3.0 / 4);
  EXPECT_DOUBLE_EQ((*out)["values"]["blackbox_accuracy"].get<double>(), 3.0 / 4);
  EXPECT_EQ((*out)["settings"]["top_k"], 2);
}

}  // namespace
}  // namespace protoquant
