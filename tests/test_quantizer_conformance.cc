// Every registered quantizer passes the same suite (instantiated over the registry, so a new
// plugin is tested automatically), like timm tests all its models the same way.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "protoquant/atomic_file.h"
#include "test_support.h"

namespace protoquant {
namespace {

constexpr int64_t kDim = 16;

absl::StatusOr<std::shared_ptr<Quantizer>> build(const std::string& name, int64_t codes, int64_t dim = kDim,
                                                 int64_t subspaces = 4) {
  Registry& registry = testing::builtin_registry();
  const auto* entry = registry.quantizers.find(name);
  Params params = Params::defaults(entry->schema);
  params.set("codes", codes);
  if (entry->schema.find("subspaces")) params.set("subspaces", subspaces);
  BuildContext context;
  context.feature_channels = dim;
  return registry.quantizers.build(name, params, context);
}

torch::Tensor sample_features(int64_t b = 4, int64_t h = 3, int64_t w = 3) {
  return torch::randn({b, kDim, h, w}) * 2.0 + 0.5;
}

std::shared_ptr<Quantizer> ready(const std::string& name, int64_t codes, const torch::Tensor& features) {
  auto q = build(name, codes);
  EXPECT_TRUE(q.ok()) << q.status();
  const auto vectors = features.permute({0, 2, 3, 1}).reshape({-1, kDim});
  EXPECT_TRUE((*q)->initialize(vectors).ok());
  return *q;
}

class QuantizerConformance : public ::testing::TestWithParam<std::string> {};

TEST_P(QuantizerConformance, ShapesAndPrototypeLayout) {
  torch::manual_seed(0);
  const auto features = sample_features();
  auto q = ready(GetParam(), 8, features);
  const Quantized out = q->quantize(features);
  EXPECT_EQ(out.quantized.sizes(), features.sizes());
  EXPECT_EQ(out.indices.size(0), 4);
  EXPECT_EQ(out.indices.size(1), 3);
  EXPECT_EQ(out.indices.size(2), 3);
  EXPECT_EQ(out.indices.scalar_type(), torch::kInt64);
  EXPECT_TRUE(out.indices.ge(0).all().item<bool>() && out.indices.lt(q->num_codes()).all().item<bool>());
  EXPECT_EQ(out.loss.dim(), 0);
  const auto prototypes = q->codebook();
  EXPECT_EQ(prototypes.size(0), q->subspaces() * q->num_codes());
  EXPECT_EQ(prototypes.size(1) * q->subspaces(), kDim);
}

TEST_P(QuantizerConformance, KeepCodesSelectsRowsAndShrinksK) {
  torch::manual_seed(1);
  const auto features = sample_features();
  auto q = ready(GetParam(), 8, features);
  const int64_t books = q->usage().codebooks;  // keep_codes takes one row per codebook (RVQ: level)
  const int64_t groups = q->subspaces();        // the prototypes: sub-spaces x K (RVQ: level 0)
  const auto before = q->codebook().detach().clone().view({groups, 8, -1});
  // A different selection per codebook, not in ascending order.
  std::vector<torch::Tensor> rows;
  for (int64_t m = 0; m < books; ++m) {
    const int64_t a = (m + 5) % 8, c = (m + 6) % 8 == 2 ? 7 : (m + 6) % 8;
    rows.push_back(torch::tensor(std::vector<int64_t>{a, 2, c}));
  }
  const auto keep = torch::stack(rows);
  ASSERT_TRUE(q->keep_codes(keep).ok());
  EXPECT_EQ(q->num_codes(), 3);
  const auto after = q->codebook().view({groups, 3, -1});
  for (int64_t m = 0; m < groups; ++m) {
    for (int64_t j = 0; j < 3; ++j) EXPECT_TRUE(torch::equal(after[m][j], before[m][keep[m][j].item<int64_t>()]));
  }
  q->reset_usage();
  const Quantized out = q->quantize(features);
  EXPECT_TRUE(out.indices.lt(3).all().item<bool>());
  EXPECT_EQ(static_cast<int64_t>(q->usage().counts.size()), books * 3);

  EXPECT_FALSE(q->keep_codes(torch::tensor(std::vector<int64_t>{0, 0}).view({1, 2}).repeat({books, 1})).ok());  // repeated
  EXPECT_FALSE(q->keep_codes(torch::tensor(std::vector<int64_t>{0, 3}).view({1, 2}).repeat({books, 1})).ok());  // out of range
  EXPECT_FALSE(q->keep_codes(torch::tensor(std::vector<int64_t>{0, 1})).ok());                         // not 2-D
}

TEST_P(QuantizerConformance, DeterministicUnderASeed) {
  auto run = [&] {
    torch::manual_seed(3);
    const auto features = sample_features();
    auto q = ready(GetParam(), 8, features);
    q->train();
    q->quantize(features);  // a training step (EMA variants update here)
    return q->quantize(features).quantized.detach();
  };
  EXPECT_TRUE(torch::equal(run(), run()));
}

TEST_P(QuantizerConformance, UsageCountsEveryVector) {
  torch::manual_seed(1);
  const auto features = sample_features();
  auto q = ready(GetParam(), 8, features);
  q->eval();
  q->reset_usage();
  q->quantize(features);
  q->quantize(features.slice(0, 0, 2));
  const UsageStats usage = q->usage();
  int64_t total = 0;
  for (auto c : usage.counts) total += c;
  const int64_t vectors = (4 + 2) * 9;
  EXPECT_EQ(total, vectors * usage.codebooks);
  EXPECT_EQ(usage.total, vectors);
  EXPECT_GE(usage.used, usage.codebooks);
  EXPECT_GE(usage.mean_perplexity, 1.0);
  EXPECT_LE(usage.mean_perplexity, static_cast<double>(usage.codes_per_codebook) + 1e-9);
}

TEST_P(QuantizerConformance, GradientsOnlyWhereThePluginPromisesThem) {
  torch::manual_seed(2);
  auto features = sample_features().requires_grad_(true);
  auto q = ready(GetParam(), 8, features.detach());
  q->train();
  const Quantized out = q->quantize(features);
  std::vector<torch::Tensor> trainable;
  for (auto& p : q->parameters()) if (p.requires_grad()) trainable.push_back(p);
  if (!q->learns_by_gradient()) {
    EXPECT_TRUE(trainable.empty()) << "a non-gradient quantizer must not expose trainable parameters";
    EXPECT_FALSE(out.quantized.requires_grad());
    return;
  }
  ASSERT_FALSE(trainable.empty());
  (out.loss + out.quantized.pow(2).sum()).backward();
  EXPECT_FALSE(features.grad().defined()) << "no gradient may flow through the assignment to the features";
  double norm = 0;
  for (auto& p : trainable) if (p.grad().defined()) norm += p.grad().abs().sum().item<double>();
  EXPECT_GT(norm, 0.0);
}

TEST_P(QuantizerConformance, SaveLoadRoundTrip) {
  torch::manual_seed(4);
  const auto features = sample_features();
  auto q = ready(GetParam(), 8, features);
  q->eval();
  testing::TempDir dir;
  ASSERT_TRUE(save_module(*q, dir / "q.pt").ok());
  torch::manual_seed(99);  // a differently initialised twin
  auto twin = ready(GetParam(), 8, sample_features());
  twin->eval();
  ASSERT_TRUE(load_module(*twin, dir / "q.pt").ok());
  EXPECT_TRUE(torch::equal(twin->codebook(), q->codebook()));
  EXPECT_TRUE(torch::equal(twin->quantize(features).indices, q->quantize(features).indices));
}

TEST_P(QuantizerConformance, MoreCodesThanVectors) {
  torch::manual_seed(5);
  const auto features = sample_features(1, 2, 2);  // 4 vectors, 64 codes
  auto q = ready(GetParam(), 64, features);
  EXPECT_TRUE(q->codebook().isfinite().all().item<bool>());
  const Quantized out = q->quantize(features);
  EXPECT_EQ(out.quantized.sizes(), features.sizes());
}

TEST_P(QuantizerConformance, NanInputIsAClearError) {
  torch::manual_seed(6);
  auto features = sample_features();
  auto q = ready(GetParam(), 8, features);
  features[1][2][0][0] = std::numeric_limits<float>::quiet_NaN();
  try {
    q->quantize(features);
    FAIL() << "NaN input was accepted";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("NaN"), std::string::npos) << e.what();
  }
}

TEST_P(QuantizerConformance, IndivisibleSubspacesAreRefused) {
  Registry& registry = testing::builtin_registry();
  if (registry.quantizers.find(GetParam())->schema.find("subspaces") == nullptr) GTEST_SKIP() << "no sub-spaces";
  auto q = build(GetParam(), 8, /*dim=*/16, /*subspaces=*/5);
  ASSERT_FALSE(q.ok());
  EXPECT_NE(q.status().message().find("not divisible"), std::string::npos) << q.status();
}

INSTANTIATE_TEST_SUITE_P(Registry, QuantizerConformance,
                         ::testing::ValuesIn(testing::builtin_registry().quantizers.names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace protoquant
