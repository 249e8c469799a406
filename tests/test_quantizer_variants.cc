// Variant-specific behaviour of ema_vq, pq and rvq against independent computations.
#include <algorithm>
#include <cmath>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "protoquant/codebook_usage.h"
#include "quantizers/rerank_cpu.h"
#include "test_support.h"

namespace protoquant {
namespace {

std::shared_ptr<Quantizer> make(const std::string& name, int64_t dim, std::map<std::string, ParamValue> set) {
  Registry& registry = testing::builtin_registry();
  Params params = Params::defaults(registry.quantizers.find(name)->schema);
  for (auto& [key, value] : set) params.set(key, value);
  BuildContext context;
  context.feature_channels = dim;
  auto q = registry.quantizers.build(name, params, context);
  EXPECT_TRUE(q.ok()) << q.status();
  return *q;
}

TEST(EmaVq, OneUpdateFollowsTheEmaAndLaplaceFormulas) {
  torch::manual_seed(0);
  const int64_t k = 4, d = 3;
  const double decay = 0.9, eps = 1e-5;
  auto q = make("ema_vq", d, {{"codes", k}, {"metric", std::string("euclidean")}, {"init", std::string("normal")},
                             {"decay", decay}, {"eps", eps}, {"restart_threshold", 0.0}});
  const auto before = q->codebook().clone();
  const auto features = torch::randn({2, d, 2, 3});
  q->train();
  const Quantized out = q->quantize(features);

  // Independent computation: assignments from the old codebook, then the EMA of counts/sums.
  const auto flat = features.permute({0, 2, 3, 1}).reshape({-1, d});
  const auto idx = out.indices.reshape({-1});
  auto counts = torch::ones({k}) * decay;  // N_k starts at 1
  auto sums = before.clone() * decay;      // m_k starts at the codeword
  for (int64_t i = 0; i < flat.size(0); ++i) {
    const int64_t code = idx[i].item<int64_t>();
    EXPECT_EQ(code, (flat[i] - before).pow(2).sum(1).argmin().item<int64_t>());
    counts[code] += 1 - decay;
    sums[code] += (1 - decay) * flat[i];
  }
  const double total = counts.sum().item<double>();
  const auto smoothed = (counts + eps) / (total + k * eps) * total;
  EXPECT_TRUE(torch::allclose(q->codebook(), sums / smoothed.unsqueeze(1), 1e-5, 1e-6));
  EXPECT_TRUE(torch::equal(out.quantized.detach(), before.index_select(0, idx).view({2, 2, 3, d}).permute({0, 3, 1, 2})));
  // In evaluation mode nothing moves.
  q->eval();
  const auto frozen = q->codebook().clone();
  q->quantize(features);
  EXPECT_TRUE(torch::equal(frozen, q->codebook()));
}

TEST(EmaVq, DeadCodesAreReseededFromTheBatch) {
  torch::manual_seed(1);
  auto q = make("ema_vq", 2, {{"codes", int64_t{8}}, {"metric", std::string("euclidean")},
                               {"init", std::string("normal")}, {"restart_threshold", 0.5}, {"decay", 0.5}});
  // Every vector sits near (100, 100): at most one code wins, the others starve.
  const auto features = torch::full({4, 2, 4, 4}, 100.0) + torch::randn({4, 2, 4, 4});
  q->train();
  q->quantize(features);
  q->quantize(features);
  // Restarted codes now hold batch vectors: every code is within the data's range.
  EXPECT_GT(q->codebook().min().item<double>(), 90.0);
}

TEST(ProductQuantizer, EncodesEachSubspaceToItsNearestCode) {
  torch::manual_seed(2);
  const int64_t d = 8, m = 4, k = 5;
  auto q = make("pq", d, {{"codes", k}, {"subspaces", m}, {"init", std::string("normal")}});
  const auto features = torch::randn({2, d, 2, 2});
  const Quantized out = q->quantize(features);
  const auto books = q->codebook().view({m, k, d / m});
  const auto flat = features.permute({0, 2, 3, 1}).reshape({-1, d});
  const auto codes = out.indices.reshape({-1, m});
  for (int64_t i = 0; i < flat.size(0); ++i) {
    for (int64_t s = 0; s < m; ++s) {
      const auto part = flat[i].slice(0, s * 2, s * 2 + 2);
      EXPECT_EQ(codes[i][s].item<int64_t>(), (books[s] - part).pow(2).sum(1).argmin().item<int64_t>());
    }
  }
  // The reconstruction concatenates the chosen sub-codewords.
  const auto rebuilt = out.quantized.permute({0, 2, 3, 1}).reshape({-1, d});
  EXPECT_TRUE(torch::equal(rebuilt[3].slice(0, 4, 6), books[2][codes[3][2].item<int64_t>()]));
}

TEST(Bf16Search, AgreesWithTheExactSearchAndEncodeMatchesQuantize) {
  torch::manual_seed(6);
  const int64_t d = 64, k = 128;
  // Clustered vectors, as real features are.
  const auto centres = torch::randn({32, d}) * 2;
  const auto vectors = centres.index_select(0, torch::randint(32, {3000}, torch::kInt64)) + torch::randn({3000, d});
  for (const std::string name : {"vq", "pq"}) {
    auto exact = make(name, d, {{"codes", k}, {"metric", std::string("euclidean")}, {"init", std::string("normal")}});
    auto fast = make(name, d, {{"codes", k}, {"metric", std::string("euclidean")}, {"init", std::string("normal")},
                               {"search", std::string("bf16")}});
    {
      torch::NoGradGuard no_grad;
      fast->codebook().copy_(exact->codebook());
    }
    const auto a = exact->encode(vectors), b = fast->encode(vectors);
    EXPECT_GE(a.eq(b).to(torch::kFloat64).mean().item<double>(), 0.99) << name;
    // encode() and quantize() pick the same codes.
    const auto features = vectors.slice(0, 0, 12).t().reshape({1, d, 3, 4});
    const auto from_quantize = exact->quantize(features).indices.reshape({12, -1});
    const auto from_encode = exact->encode(features.permute({0, 2, 3, 1}).reshape({-1, d}));
    EXPECT_TRUE(torch::equal(from_quantize, from_encode)) << name;
  }
}

// The CPU re-rank pass against ATen: topk of the bf16 scores plus bias, then the exact fp32 best
// of those, over two sub-spaces whose vectors are strided views (as PQ passes them), with K not a
// multiple of the 16-score blocks, and every candidate count from 1 to all K.
TEST(Bf16Search, RerankPassMatchesTopkThenExactArgmax) {
  torch::manual_seed(11);
  const int64_t m = 2, n = 300, k = 75, d = 10;
  const auto rows = torch::randn({n, m * d});
  const auto vectors = rows.view({n, m, d}).transpose(0, 1);  // M x n x d, row stride M*d
  const auto weights = torch::randn({m, k, d});
  const auto bias = torch::randn({m, 1, k});
  const auto low = torch::bmm(vectors.to(torch::kBFloat16), weights.to(torch::kBFloat16).transpose(1, 2));
  const auto exact = torch::bmm(vectors, weights.transpose(1, 2)) + bias;  // M x n x K
  for (int64_t c : {int64_t{1}, int64_t{3}, int64_t{16}, k}) {
    const auto got = quantizers::rerank_candidates(low, vectors, weights, bias, c);
    ASSERT_EQ(got.sizes(), (std::vector<int64_t>{m, n}));
    const auto candidates = std::get<1>((low.to(torch::kFloat32) + bias).topk(c, 2));
    const auto best = exact.gather(2, candidates).max(2);  // the exact score of the best candidate
    const auto chosen = exact.gather(2, got.unsqueeze(2)).squeeze(2);
    // Equal up to fp32 summation order; a near-tie may pick either code.
    EXPECT_LT((chosen - std::get<0>(best)).abs().max().item<double>(), 1e-4) << c << " candidates";
    if (c == k) {  // with every code a candidate this is the exact search
      EXPECT_GE(got.eq(exact.argmax(2)).to(torch::kFloat64).mean().item<double>(), 0.999);
    }
  }
  // Without a bias (cosine), and with every score NaN (an error, not an index).
  const auto plain = quantizers::rerank_candidates(low, vectors, weights, {}, 4);
  const auto plain_exact = torch::bmm(vectors, weights.transpose(1, 2));
  const auto plain_best = plain_exact.gather(2, std::get<1>(low.to(torch::kFloat32).topk(4, 2))).amax(2);
  EXPECT_LT((plain_exact.gather(2, plain.unsqueeze(2)).squeeze(2) - plain_best).abs().max().item<double>(), 1e-4);
  EXPECT_THROW(quantizers::rerank_candidates(torch::full_like(low, NAN), vectors, weights, {}, 4), c10::Error);
  auto one_nan = low.clone();
  one_nan[1][7][40] = NAN;  // a single NaN score is an error too, not a skipped code
  EXPECT_THROW(quantizers::rerank_candidates(one_nan, vectors, weights, {}, 4), c10::Error);
}

TEST(ResidualQuantizer, MoreLevelsReconstructBetter) {
  torch::manual_seed(3);
  const auto features = torch::randn({8, 6, 4, 4});
  const auto vectors = features.permute({0, 2, 3, 1}).reshape({-1, 6});
  double previous = 1e30;
  for (int64_t levels : {1, 2, 4}) {
    torch::manual_seed(4);
    auto q = make("rvq", 6, {{"codes", int64_t{16}}, {"levels", levels}, {"metric", std::string("euclidean")}});
    ASSERT_TRUE(q->initialize(vectors).ok());
    const double error = (q->quantize(features).quantized - features).pow(2).mean().item<double>();
    EXPECT_LT(error, previous) << levels << " levels";
    previous = error;
  }
}

TEST(GroupedHead, EachSubspaceIsAnIndependentPrototypeHead) {
  torch::manual_seed(5);
  Registry& registry = testing::builtin_registry();
  const Params params = Params::defaults(registry.heads.find("protoquant")->schema);
  const int64_t m = 2, k = 3, sub = 4, classes = 2;
  const auto prototypes = torch::randn({m * k, sub});
  const auto features = torch::randn({2, m * sub, 2, 2});
  BuildContext grouped;
  grouped.num_classes = classes;
  grouped.prototypes = prototypes;
  grouped.prototype_groups = m;
  auto head = *registry.heads.build("protoquant", params, grouped);
  head->eval();
  const HeadOutput out = head->forward(features);
  ASSERT_EQ(out.presence.sizes(), (std::vector<int64_t>{2, m * k}));
  for (int64_t s = 0; s < m; ++s) {
    // A single-space head on sub-space s's channels and prototypes must agree.
    BuildContext single;
    single.num_classes = classes;
    single.prototypes = prototypes.slice(0, s * k, (s + 1) * k);
    auto part = *registry.heads.build("protoquant", params, single);
    part->eval();
    const HeadOutput expected = part->forward(features.slice(1, s * sub, (s + 1) * sub));
    EXPECT_TRUE(torch::allclose(out.presence.slice(1, s * k, (s + 1) * k), expected.presence, 1e-5, 1e-6));
    EXPECT_TRUE(torch::allclose(out.similarity.slice(1, s * k, (s + 1) * k), expected.similarity, 1e-5, 1e-6));
  }
  const auto weight = head->named_parameters()["weight"];
  EXPECT_TRUE(torch::allclose(out.logits, out.presence.mm(torch::relu(weight).t()), 1e-5, 1e-6));
}

TEST(Pruning, KeepsTheMostUsedCodesPerCodebookWithLowerIndexWinningTies) {
  torch::manual_seed(12);
  const auto counts = torch::randint(0, 6, {3, 40}, torch::kInt64);  // many ties
  const auto kept = most_used_codes(counts, 15);
  ASSERT_EQ(kept.sizes(), torch::IntArrayRef({3, 15}));
  for (int64_t m = 0; m < 3; ++m) {
    // Independent: sort (count desc, index asc) pairs by hand, take 15, order by index.
    std::vector<std::pair<int64_t, int64_t>> pairs;
    for (int64_t k = 0; k < 40; ++k) pairs.emplace_back(-counts[m][k].item<int64_t>(), k);
    std::sort(pairs.begin(), pairs.end());
    std::vector<int64_t> expected;
    for (int i = 0; i < 15; ++i) expected.push_back(pairs[i].second);
    std::sort(expected.begin(), expected.end());
    for (int i = 0; i < 15; ++i) EXPECT_EQ(kept[m][i].item<int64_t>(), expected[i]) << "codebook " << m << " rank " << i;
  }
}

}  // namespace
}  // namespace protoquant
