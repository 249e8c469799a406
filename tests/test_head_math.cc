// The protoquant head against an independent scalar computation of METHOD.md's formulas.
#include <cmath>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "test_support.h"

namespace protoquant {
namespace {

std::shared_ptr<Head> build_head(const torch::Tensor& prototypes, int64_t classes, double temperature,
                                 double sparsity = 0.0, bool pipnet = false) {
  Registry& registry = testing::builtin_registry();
  Params params = Params::defaults(registry.heads.find("protoquant")->schema);
  params.set("temperature", temperature);
  params.set("sparsity", sparsity);
  params.set("pipnet_logits", pipnet);
  BuildContext context;
  context.num_classes = classes;
  context.prototypes = prototypes;
  auto head = registry.heads.build("protoquant", params, context);
  EXPECT_TRUE(head.ok()) << head.status();
  return *head;
}

TEST(ProtoQuantHead, MatchesAHandComputation) {
  torch::manual_seed(0);
  const int64_t B = 2, D = 3, H = 2, W = 3, P = 4, C = 3;
  const double tau = 0.5;
  const auto features = torch::randn({B, D, H, W}, torch::kFloat64).to(torch::kFloat32);
  const auto prototypes = torch::randn({P, D}).mul(2.0);
  auto head = build_head(prototypes, C, tau);
  // Some negative weights: relu must zero them.
  auto weight = torch::randn({C, P});
  head->named_parameters()["weight"].data().copy_(weight);
  head->eval();
  const HeadOutput out = head->forward(features);

  auto f = features.to(torch::kFloat64);
  auto e = prototypes.to(torch::kFloat64);
  auto w = weight.to(torch::kFloat64);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<double> presence(P, 0.0);
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t x = 0; x < W; ++x) {
        std::vector<double> sim(P);
        double zn = 0;
        for (int64_t d = 0; d < D; ++d) zn += std::pow(f[b][d][h][x].item<double>(), 2);
        zn = std::max(std::sqrt(zn), 1e-6);
        for (int64_t p = 0; p < P; ++p) {
          double dot = 0, en = 0;
          for (int64_t d = 0; d < D; ++d) {
            dot += f[b][d][h][x].item<double>() * e[p][d].item<double>();
            en += std::pow(e[p][d].item<double>(), 2);
          }
          sim[p] = dot / (zn * std::max(std::sqrt(en), 1e-6));
          EXPECT_NEAR(out.similarity[b][p][h][x].item<double>(), sim[p], 1e-5);
        }
        double denominator = 0;
        for (int64_t p = 0; p < P; ++p) denominator += std::exp(sim[p] / tau);
        for (int64_t p = 0; p < P; ++p) presence[p] = std::max(presence[p], std::exp(sim[p] / tau) / denominator);
      }
    }
    for (int64_t p = 0; p < P; ++p) EXPECT_NEAR(out.presence[b][p].item<double>(), presence[p], 1e-5);
    for (int64_t c = 0; c < C; ++c) {
      double logit = 0;
      for (int64_t p = 0; p < P; ++p) logit += presence[p] * std::max(0.0, w[c][p].item<double>());
      EXPECT_NEAR(out.logits[b][c].item<double>(), logit, 1e-5);
    }
  }
}

TEST(ProtoQuantHead, WeightsStartNearOneAndOptionsApply) {
  torch::manual_seed(1);
  const auto prototypes = torch::randn({64, 8});
  auto head = build_head(prototypes, 50, 0.1, /*sparsity=*/0.01, /*pipnet=*/true);
  const auto weight = head->named_parameters()["weight"];
  EXPECT_NEAR(weight.mean().item<double>(), 1.0, 0.01);   // N(1, 0.1) over 3200 values
  EXPECT_NEAR(weight.std().item<double>(), 0.1, 0.01);
  EXPECT_NEAR(head->regularization().item<double>(), 0.01 * torch::relu(weight).sum().item<double>(), 1e-3);
  // Codewords are copied, not shared with the quantizer.
  EXPECT_TRUE(torch::equal(head->prototypes(), prototypes));
  EXPECT_NE(head->prototypes().data_ptr(), prototypes.data_ptr());

  const auto features = torch::randn({2, 8, 3, 3});
  head->eval();
  const auto plain = head->forward(features).logits;
  head->train();
  const auto pipnet = head->forward(features).logits;
  EXPECT_TRUE(torch::allclose(pipnet, torch::log1p(plain.pow(2)), 1e-5, 1e-6));
}

TEST(ProtoQuantHead, LargeBatchesAreChunkedWithoutChangingTheResult) {
  torch::manual_seed(2);
  // 8 x 8 cells x 4096 prototypes: 16 images per 16 MiB chunk, so 40 images take three chunks.
  auto head = build_head(torch::randn({4096, 8}), 5, 0.1);
  head->eval();
  const auto features = torch::randn({40, 8, 8, 8});
  const HeadOutput whole = head->forward(features);
  for (int64_t begin = 0; begin < 40; begin += 8) {
    const HeadOutput part = head->forward(features.slice(0, begin, begin + 8));
    EXPECT_TRUE(torch::allclose(whole.presence.slice(0, begin, begin + 8), part.presence, 1e-6, 1e-7));
    EXPECT_TRUE(torch::allclose(whole.logits.slice(0, begin, begin + 8), part.logits, 1e-5, 1e-6));
    EXPECT_TRUE(torch::allclose(whole.similarity.slice(0, begin, begin + 8), part.similarity, 1e-5, 1e-6));
  }
}

TEST(ProtoQuantHead, GradientReachesPrototypesAndWeights) {
  auto head = build_head(torch::randn({5, 4}), 3, 0.1);
  head->train();
  auto out = head->forward(torch::randn({2, 4, 2, 2}));
  out.logits.sum().backward();
  for (auto& p : head->parameters()) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_GT(p.grad().abs().sum().item<double>(), 0.0);
  }
}

}  // namespace
}  // namespace protoquant
