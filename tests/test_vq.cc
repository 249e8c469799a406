// The vq quantizer against brute-force nearest-code search and the stage-1 gradient rules.
#include <set>

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
    const auto whole = quantizers::kmeans(data, 40, 5, cosine, /*seed=*/5, /*block_bytes=*/int64_t{1} << 30);
    const auto blocks = quantizers::kmeans(data, 40, 5, cosine, /*seed=*/5, /*block_bytes=*/40 * 4 * 7);  // 7 rows a block
    EXPECT_TRUE(torch::allclose(whole, blocks, 1e-5, 1e-6)) << "cosine " << cosine;
  }
}

// k-means++ seeding by hand, one process: every seed a data row, drawn in proportion to its
// squared distance to the nearest earlier seed. With the data in well-separated tight clusters
// and as many codes as clusters, the seeds land one per cluster (any other draw has probability
// below 1e-6), and the Lloyd steps then find the cluster means.
TEST(VectorQuantizer, KmeansSeedsOnePerSeparatedClusterAndFindsTheMeans) {
  torch::manual_seed(3);
  const int64_t clusters = 6, per = 50;
  const auto means = torch::randn({clusters, 4}) * 100;
  const auto data = (means.repeat_interleave(per, 0) + 0.01 * torch::randn({clusters * per, 4})).contiguous();
  for (uint64_t seed = 0; seed < 5; ++seed) {
    const auto seeds = quantizers::kmeans(data, clusters, /*iterations=*/0, false, seed);
    const auto centres = quantizers::kmeans(data, clusters, /*iterations=*/3, false, seed);
    std::set<int64_t> hit;
    for (int64_t k = 0; k < clusters; ++k) {
      EXPECT_LT((data - seeds[k]).abs().sum(1).min().item<double>(), 1e-6) << "seed " << k << " is not a data row";
      const auto nearest_mean = (means - seeds[k]).norm(2, 1).argmin().item<int64_t>();
      hit.insert(nearest_mean);
      const auto expected = data.slice(0, nearest_mean * per, (nearest_mean + 1) * per).mean(0);
      EXPECT_LT((centres - expected).norm(2, 1).min().item<double>(), 1e-4) << "cluster " << nearest_mean;
    }
    EXPECT_EQ(hit.size(), static_cast<size_t>(clusters)) << "seed " << seed;
  }
}

// Data-parallel: every rank computes distances for its share of the rows only, yet each returns
// the centres one process computes alone (uneven shares: 301 rows over 2 and 3 ranks).
TEST(VectorQuantizer, KmeansOnSeveralRanksEqualsOneProcess) {
  torch::manual_seed(8);
  const auto data = torch::randn({301, 8});
  for (const int world : {2, 3}) {
    for (const bool cosine : {false, true}) {
      const auto alone = quantizers::kmeans(data, 40, 5, cosine, /*seed=*/11);
      const auto ranks = testing::on_ranks(world, [&](Collectives& group) {
        return quantizers::kmeans(data, 40, 5, cosine, /*seed=*/11, int64_t{64} << 20, group);
      });
      for (int r = 0; r < world; ++r) {
        ASSERT_TRUE(ranks[r].defined());
        EXPECT_TRUE(torch::allclose(ranks[r], alone, 1e-5, 1e-5)) << world << " ranks, rank " << r << ", cosine " << cosine;
      }
    }
  }
}

// Empty clusters (duplicate rows leave codes without members) are re-seeded from the farthest
// rows of every rank's share, the same on every rank, and every code ends on a distinct vector.
TEST(VectorQuantizer, KmeansReseedsEmptyClustersAlikeOnEveryRank) {
  torch::manual_seed(9);
  // 12 distinct vectors, each 20 times, and 4 far singletons: 16 codes seed on the 16 distinct
  // vectors, and 24 more codes repeat them, so Lloyd's first step leaves 24 codes empty.
  const auto distinct = torch::randn({12, 4});
  const auto far = torch::randn({4, 4}) * 50;
  const auto data = torch::cat({distinct.repeat({20, 1}), far});
  const auto alone = quantizers::kmeans(data, 40, 2, false, /*seed=*/4);
  const auto ranks = testing::on_ranks(2, [&](Collectives& group) {
    return quantizers::kmeans(data, 40, 2, false, /*seed=*/4, int64_t{64} << 20, group);
  });
  ASSERT_TRUE(ranks[0].defined() && ranks[1].defined());
  EXPECT_TRUE(ranks[0].equal(ranks[1]));
  // Every distinct vector, the far ones included, is some code.
  const auto vectors = torch::cat({distinct, far});
  for (const auto& centres : {alone, ranks[0]}) {
    const auto gap = (vectors.unsqueeze(1) - centres.unsqueeze(0)).norm(2, 2).min(1);
    EXPECT_LT(std::get<0>(gap).max().item<double>(), 1e-4);
  }
}

// Inf in the sample makes every sampling mass infinite: an error, the same on every rank.
TEST(VectorQuantizer, KmeansOnInfiniteVectorsIsAClearError) {
  auto data = torch::randn({50, 4});
  data[7][2] = std::numeric_limits<float>::infinity();
  try {
    quantizers::kmeans(data, 8, 2, false, /*seed=*/1);
    ADD_FAILURE() << "no error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("inf or NaN"), std::string::npos) << e.what();
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
