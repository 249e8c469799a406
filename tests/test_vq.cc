// The vq quantizer against brute-force nearest-code search and the stage-1 gradient rules.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "quantizers/codebook_init.h"
#include "test_support.h"

namespace protoquant {
namespace {

std::shared_ptr<Quantizer> build_vq(int64_t dim, int64_t codes, const std::string& metric,
                                    const std::string& init = "normal") {
  Registry& registry = testing::builtin_registry();
  Params params = Params::defaults(registry.quantizers.find("vq")->schema);
  params.set("codes", codes);
  params.set("metric", metric);
  params.set("init", init);
  BuildContext context;
  context.feature_channels = dim;
  auto q = registry.quantizers.build("vq", params, context);
  EXPECT_TRUE(q.ok()) << q.status();
  return *q;
}

TEST(VectorQuantizer, AssignsTheBruteForceNearestCode) {
  torch::manual_seed(0);
  for (const std::string metric : {"cosine", "euclidean"}) {
    auto q = build_vq(6, 10, metric);
    const auto features = torch::randn({3, 6, 2, 2});
    const Quantized out = q->quantize(features);
    const auto codebook = q->codebook().detach();
    for (int64_t b = 0; b < 3; ++b) {
      for (int64_t h = 0; h < 2; ++h) {
        for (int64_t w = 0; w < 2; ++w) {
          const auto z = features.index({b, torch::indexing::Slice(), h, w});
          int64_t best = -1;
          double best_score = -1e30;
          for (int64_t k = 0; k < 10; ++k) {
            const auto e = codebook[k];
            const double score = metric == "cosine"
                                     ? (z.dot(e) / (z.norm() * e.norm())).item<double>()
                                     : -(z - e).pow(2).sum().item<double>();
            if (score > best_score) best_score = score, best = k;
          }
          EXPECT_EQ(out.indices[b][h][w].item<int64_t>(), best) << metric;
          // The raw codeword (not a normalised one) replaces the feature vector.
          EXPECT_TRUE(torch::equal(out.quantized.index({b, torch::indexing::Slice(), h, w}), codebook[best]));
        }
      }
    }
  }
}

TEST(VectorQuantizer, CodebookLossIsMseToDetachedFeaturesAndOnlyCodesGetGradient) {
  torch::manual_seed(1);
  auto q = build_vq(4, 8, "cosine");
  auto features = torch::randn({2, 4, 3, 3}, torch::requires_grad());
  const Quantized out = q->quantize(features);
  const auto chosen = out.quantized.detach().permute({0, 2, 3, 1}).reshape({-1, 4});
  const auto flat = features.detach().permute({0, 2, 3, 1}).reshape({-1, 4});
  EXPECT_NEAR(out.loss.item<double>(), (chosen - flat).pow(2).mean().item<double>(), 1e-6);
  (out.loss + out.quantized.sum()).backward();
  EXPECT_FALSE(features.grad().defined());  // no gradient through the assignment to z
  const auto grad = q->codebook().grad();
  ASSERT_TRUE(grad.defined());
  // Only the chosen codewords receive gradient.
  const auto used = torch::bincount(out.indices.reshape({-1}), {}, 8).gt(0);
  const auto has_grad = grad.abs().sum(1).gt(0);
  EXPECT_TRUE(torch::equal(used, has_grad));
}

TEST(VectorQuantizer, UsageCountsEveryVectorOfAPass) {
  auto q = build_vq(4, 16, "cosine");
  q->reset_usage();
  q->quantize(torch::randn({5, 4, 2, 3}));
  q->quantize(torch::randn({2, 4, 2, 3}));
  const UsageStats usage = q->usage();
  int64_t total = 0;
  for (auto c : usage.counts) total += c;
  EXPECT_EQ(total, 7 * 6);
  EXPECT_EQ(usage.total, 42);
  EXPECT_LE(usage.mean_perplexity, static_cast<double>(usage.used) + 1e-9);
  EXPECT_GE(usage.mean_perplexity, 1.0);
  q->reset_usage();
  EXPECT_EQ(q->usage().used, 0);
}

TEST(VectorQuantizer, KmeansInitPlacesCodesOnTheData) {
  torch::manual_seed(2);
  // Four well separated clusters in R^3; euclidean k-means with K = 4 must find their centres.
  const auto centres = torch::tensor({{10.f, 0.f, 0.f}, {0.f, 10.f, 0.f}, {0.f, 0.f, 10.f}, {-10.f, -10.f, -10.f}});
  const auto labels = torch::arange(400, torch::kInt64).remainder(4);
  const auto sample = centres.index_select(0, labels) + 0.1 * torch::randn({400, 3});
  auto q = build_vq(3, 4, "euclidean", "kmeans");
  ASSERT_TRUE(q->initialize(sample).ok());
  const auto codebook = q->codebook().detach();
  for (int64_t c = 0; c < 4; ++c) {
    const double nearest = (codebook - centres[c]).norm(2, 1).min().item<double>();
    EXPECT_LT(nearest, 0.2) << "cluster " << c;
  }
}

// The assignment step in blocks of rows gives the same centres as one whole distance matrix:
// a block of one row's distances, and a budget that holds every row at once.
TEST(VectorQuantizer, KmeansInBlocksOfRowsEqualsTheWholeMatrix) {
  const auto data = torch::randn({300, 8}, torch::TensorOptions().dtype(torch::kFloat32));
  for (const bool cosine : {false, true}) {
    torch::manual_seed(5);
    const auto whole = quantizers::kmeans(data, 40, 5, cosine, /*block_bytes=*/int64_t{1} << 30);
    torch::manual_seed(5);
    const auto blocks = quantizers::kmeans(data, 40, 5, cosine, /*block_bytes=*/40 * 4 * 7);  // 7 rows a block
    EXPECT_TRUE(torch::allclose(whole, blocks, 1e-5, 1e-6)) << "cosine " << cosine;
  }
}

TEST(VectorQuantizer, NanInputIsAClearError) {
  auto q = build_vq(4, 8, "cosine");
  auto features = torch::randn({1, 4, 2, 2});
  features[0][1][1][1] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(q->quantize(features), c10::Error);
}

}  // namespace
}  // namespace protoquant
