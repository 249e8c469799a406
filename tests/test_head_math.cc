// The protoquant head against an independent scalar computation of METHOD.md's formulas.
#include <cmath>
#include <limits>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "heads/presence.h"
#include "heads/presence_avx512.h"
#include "heads/presence_cpu.h"
#include "protoquant/model_size.h"
#include "test_support.h"

namespace protoquant {
namespace {

// Runs the presence passes with the AVX-512 kernels on or off, and turns them back on afterwards.
struct Kernels {
  explicit Kernels(bool avx512) : before(heads::avx512::enabled()) { heads::avx512::set_enabled(avx512); }
  ~Kernels() { heads::avx512::set_enabled(before); }
  bool before;
};

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

TEST(ProtoQuantHeadEditing, RemovingUnusedPrototypesKeepsLogitsUnlessRenormalised) {
  torch::manual_seed(4);
  const auto prototypes = torch::randn({6, 5});
  const auto features = torch::randn({3, 5, 2, 2});
  auto weights = torch::rand({2, 6}) + 0.1;
  weights.select(1, 1).zero_();
  weights.select(1, 4).zero_();
  auto head = build_head(prototypes, 2, 0.2);
  ASSERT_TRUE(head->set_class_weights(weights).ok());
  head->eval();
  const auto full = head->forward(features);
  const auto keep = torch::tensor({0, 2, 3, 5}, torch::kInt64);
  ASSERT_TRUE(head->keep_prototypes(keep, /*keep_in_softmax=*/true).ok());
  const auto pruned = head->forward(features);
  EXPECT_EQ(head->prototypes().size(0), 4);
  EXPECT_EQ(head->class_weights().size(1), 4);
  EXPECT_TRUE(torch::allclose(pruned.logits, full.logits, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(pruned.presence, full.presence.index_select(1, keep), 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(pruned.similarity, full.similarity.index_select(1, keep), 1e-5, 1e-6));

  // Renormalised: the softmax only sees the kept prototypes (an independent head built on them).
  auto renormalised = build_head(prototypes, 2, 0.2);
  ASSERT_TRUE(renormalised->set_class_weights(weights).ok());
  ASSERT_TRUE(renormalised->keep_prototypes(keep, /*keep_in_softmax=*/false).ok());
  renormalised->eval();
  auto reference = build_head(prototypes.index_select(0, keep), 2, 0.2);
  ASSERT_TRUE(reference->set_class_weights(weights.index_select(1, keep)).ok());
  reference->eval();
  EXPECT_TRUE(torch::allclose(renormalised->forward(features).logits, reference->forward(features).logits, 1e-5, 1e-6));

  EXPECT_FALSE(head->set_class_weights(-torch::ones({2, 4})).ok());      // negative
  EXPECT_FALSE(head->set_class_weights(torch::ones({2, 5})).ok());       // wrong shape
  EXPECT_FALSE(head->keep_prototypes(torch::tensor({0, 0}, torch::kInt64), true).ok());  // repeated
  EXPECT_FALSE(head->keep_prototypes(torch::tensor({9}, torch::kInt64), true).ok());     // out of range
}

// The limit stage's fine-tuning: no gradient reaches the weights outside the mask. First with
// positive held weights, so that nothing but the mask (not relu's zero gradient at 0) holds them;
// then as the stage uses it, zeros held through AdamW with weight decay.
TEST(ProtoQuantHeadEditing, HeldClassWeightsGetNoGradientAndHeldZerosStayZero) {
  torch::manual_seed(5);
  const auto mask = torch::rand({2, 6}).gt(0.5);
  ASSERT_GT(mask.sum().item<int64_t>(), 0);
  ASSERT_LT(mask.sum().item<int64_t>(), 12);
  const auto loss_of = [](Head& head) {
    return head.forward(torch::randn({4, 5, 2, 2})).logits.square().sum() + head.class_weights().sum();
  };
  auto head = build_head(torch::randn({6, 5}), 2, 0.2);
  ASSERT_TRUE(head->set_class_weights(torch::rand({2, 6}) + 0.5).ok());
  ASSERT_TRUE(head->hold_class_weights(mask).ok());
  const auto before = head->class_weights().detach().clone();
  torch::optim::Adam adam(head->parameters(), torch::optim::AdamOptions(0.05));
  head->train();
  for (int step = 0; step < 5; ++step) {
    adam.zero_grad();
    loss_of(*head).backward();
    adam.step();
  }
  const auto after = head->class_weights().detach();
  EXPECT_TRUE(torch::equal(after.masked_select(mask.logical_not()), before.masked_select(mask.logical_not())));
  EXPECT_TRUE(after.masked_select(mask).ne(before.masked_select(mask)).all().item<bool>());

  auto limited = build_head(torch::randn({6, 5}), 2, 0.2);
  ASSERT_TRUE(limited->set_class_weights((torch::rand({2, 6}) + 0.5) * mask).ok());
  ASSERT_TRUE(limited->hold_class_weights(mask).ok());
  torch::optim::AdamW adamw(limited->parameters(), torch::optim::AdamWOptions(0.05).weight_decay(0.1));
  limited->train();
  for (int step = 0; step < 5; ++step) {
    adamw.zero_grad();
    loss_of(*limited).backward();
    adamw.step();
  }
  EXPECT_TRUE(limited->class_weights().masked_select(mask.logical_not()).eq(0).all().item<bool>());
  EXPECT_FALSE(head->hold_class_weights(torch::ones({2, 5}, torch::kBool)).ok());  // wrong shape
  EXPECT_FALSE(head->hold_class_weights(torch::ones({2, 6})).ok());                // not bool
}

TEST(ModelSize, CountsAsDefined) {
  const auto w = torch::tensor({{0.5, 0.05, 0.0, 0.2}, {0.0, 0.0005, 0.0, 0.3}});
  const ModelSize size = model_size(w);
  EXPECT_DOUBLE_EQ(size.local_size, (2.0 + 1.0) / 2.0);    // > 0.1: {0.5, 0.2} and {0.3}
  EXPECT_EQ(size.global_size, 3);                           // prototype 2 unused, 1 used (0.05)
  EXPECT_DOUBLE_EQ(size.sparsity, 4.0 / 8.0);               // 0, 0, 0.0005, 0 <= 1e-3
}

TEST(FusedPresence, ValueAndGradientsMatchAutogradOfTheFormula) {
  torch::manual_seed(6);
  const int64_t groups = 2, batch = 3, cells = 5, k = 7, d = 4;
  const double tau = 0.5, eps = 1e-6;
  const auto zn0 = torch::randn({groups, batch * cells, d}, torch::kFloat64);
  const auto e0 = torch::randn({groups, k, d}, torch::kFloat64) * 2;
  e0[1][3].zero_();  // a zero prototype: its norm is clamped to eps
  const auto upstream = torch::randn({groups, batch, k}, torch::kFloat64);
  const auto scale0 = torch::rand({groups, batch * cells}, torch::kFloat64) + 0.5;  // a constant row scale
  auto run = [&](bool fused, bool scaled) {
    auto zn = zn0.clone().requires_grad_(true);
    auto en = e0.clone().requires_grad_(true);  // raw prototypes
    const auto scale = scaled ? scale0 : torch::Tensor();
    torch::Tensor presence;
    if (fused) {
      presence = heads::prototype_presence(zn, en, batch, tau, scale, eps);
    } else {  // the formula, differentiated by autograd
      const auto unit = en / en.norm(2, 2, true).clamp_min(eps) / tau;
      const auto rows = scaled ? zn * scale0.unsqueeze(2) : zn;
      presence = torch::softmax(torch::bmm(rows, unit.transpose(1, 2)), 2).view({groups, batch, cells, k}).amax(2);
    }
    (presence * upstream).sum().backward();
    return std::make_tuple(presence.detach(), zn.grad(), en.grad());
  };
  for (bool scaled : {false, true}) {  // fp64 takes the ATen path, with and without a row scale
    const auto [p1, gz1, ge1] = run(true, scaled);
    const auto [p2, gz2, ge2] = run(false, scaled);
    EXPECT_TRUE(torch::allclose(p1, p2, 1e-12, 1e-12)) << scaled;
    EXPECT_TRUE(torch::allclose(ge1, ge2, 1e-10, 1e-12)) << ge1 - ge2;
    EXPECT_TRUE(torch::allclose(gz1, gz2, 1e-10, 1e-12)) << gz1 - gz2;
  }
}

// The CPU passes (presence_cpu.cc) against the formula in fp64 through autograd, with raw cells
// and their inverse norms as the row scale, several groups and a K that is not a multiple of any
// vector width.
TEST(FusedPresence, CpuPassesMatchTheFormulaInFp64) {
  torch::manual_seed(7);
  const int64_t groups = 2, batch = 3, cells = 5, k = 37, d = 6;
  const auto z0 = torch::randn({groups, batch * cells, d}, torch::kFloat64) * 3;
  const auto scale = 1.0 / z0.norm(2, 2);
  const auto en0 = torch::randn({groups, k, d}, torch::kFloat64) * 2;  // raw prototypes, tau = 0.1
  en0[1][5].zero_();  // a zero prototype: its norm is clamped, and no component is removed
  const auto upstream = torch::randn({groups, batch, k}, torch::kFloat64);
  for (const auto [dtype, avx512] : {std::pair{torch::kFloat32, false}, std::pair{torch::kBFloat16, false},
                                     std::pair{torch::kBFloat16, true}}) {
    if (avx512 && !heads::avx512::supported()) continue;
    SCOPED_TRACE(avx512 ? "AVX-512 kernels" : "portable loops");
    const Kernels kernels(avx512);
    // The reference starts from the same (rounded) inputs, so only the passes' arithmetic differs.
    const auto zr = z0.to(dtype).to(torch::kFloat64), er = en0.to(dtype).to(torch::kFloat64);
    // Prototypes stay fp32 (as the head's parameters do); only the GEMM side is rounded.
    auto z = zr.to(dtype).requires_grad_(true), en = er.to(torch::kFloat32).requires_grad_(true);
    const auto presence = heads::prototype_presence(z, en, batch, 0.1, scale.to(torch::kFloat32));
    EXPECT_EQ(presence.scalar_type(), torch::kFloat32);
    (presence * upstream.to(torch::kFloat32)).sum().backward();
    auto zx = zr.clone().requires_grad_(true), ex = er.clone().requires_grad_(true);
    const auto s = torch::bmm(zx * scale.unsqueeze(2), (ex / ex.norm(2, 2, true).clamp_min(1e-6) / 0.1).transpose(1, 2));
    const auto expected = torch::softmax(s, 2).view({groups, batch, cells, k}).amax(2);
    (expected * upstream).sum().backward();
    // bf16 keeps the similarities (|S| <= 10) to 8 bits, so its softmax is good to a few per cent.
    const double tolerance = dtype == torch::kFloat32 ? 2e-5 : 0.05;
    const auto close = [&](const torch::Tensor& a, const torch::Tensor& b) {
      return (a.to(torch::kFloat64) - b).abs().max().item<double>() <= tolerance * (1.0 + b.abs().max().item<double>());
    };
    EXPECT_TRUE(close(presence.detach(), expected.detach())) << dtype;
    EXPECT_TRUE(close(en.grad(), ex.grad())) << dtype << (en.grad().to(torch::kFloat64) - ex.grad()).abs().max();
    EXPECT_TRUE(close(z.grad(), zx.grad())) << dtype << (z.grad().to(torch::kFloat64) - zx.grad()).abs().max();
  }
}

TEST(FusedPresence, CellRowsAndInverseNormsMatchATen) {
  torch::manual_seed(12);
  const int64_t b = 3, groups = 2, d = 21, h = 4, w = 5;
  const auto nchw = torch::randn({b, groups * d, h, w});
  nchw[1].select(1, 2).select(1, 3).zero_();  // a zero cell: its norm is clamped to eps
  const auto reference = nchw.permute({0, 2, 3, 1}).reshape({-1, groups, d}).transpose(0, 1);  // G x N x d
  for (const auto& features : {nchw, nchw.contiguous(at::MemoryFormat::ChannelsLast)}) {
    for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
      const auto [rows, inverse_norm] = heads::cells_and_inverse_norms(features, groups, dtype, 1e-6);
      ASSERT_TRUE(rows.defined());
      EXPECT_EQ(rows.scalar_type(), dtype);
      EXPECT_TRUE(torch::equal(rows, reference.to(dtype)));
      const auto expected = 1.0 / reference.to(dtype).to(torch::kFloat64).norm(2, 2).clamp_min(1e-6);
      EXPECT_TRUE(torch::allclose(inverse_norm.to(torch::kFloat64), expected, 1e-5, 0)) << dtype;
    }
  }
  // bf16 features into bf16 rows: used as stored (a view of a channels-last map), norms from the
  // stored values.
  const auto stored = nchw.to(torch::kBFloat16).contiguous(at::MemoryFormat::ChannelsLast);
  const auto [rows, inverse_norm] = heads::cells_and_inverse_norms(stored, groups, torch::kBFloat16, 1e-6);
  ASSERT_TRUE(rows.defined());
  EXPECT_TRUE(torch::equal(rows, reference.to(torch::kBFloat16)));
  EXPECT_EQ(rows.data_ptr(), stored.data_ptr());
  const auto expected = 1.0 / reference.to(torch::kBFloat16).to(torch::kFloat64).norm(2, 2).clamp_min(1e-6);
  EXPECT_TRUE(torch::allclose(inverse_norm.to(torch::kFloat64), expected, 1e-5, 0));
  EXPECT_FALSE(heads::cells_and_inverse_norms(stored, groups, torch::kFloat32, 1e-6).first.defined());  // widen: ATen
  EXPECT_FALSE(heads::cells_and_inverse_norms(nchw.to(torch::kFloat64), groups, torch::kFloat64, 1e-6).first.defined());
}

// The AVX-512 row passes against the portable ones on the same bf16 similarities: the softmax to
// one bf16 rounding, presence to fp32 rounding, the same argmax cells (up to near-ties), and the
// same gradient to one rounding. K = 37 leaves a partial vector; with K = 2 prototypes and 6 cells
// some cells hold no max, whose gradient rows must be exact zeros.
TEST(FusedPresence, Avx512KernelsMatchThePortableLoops) {
  if (!heads::avx512::supported()) GTEST_SKIP() << "this CPU has no AVX-512 BF16";
  torch::manual_seed(13);
  for (const int64_t k : {int64_t{37}, int64_t{256}, int64_t{2}}) {
    SCOPED_TRACE(k);
    const int64_t groups = 2, batch = 3, cells = 6, n = batch * cells;
    const auto s0 = (torch::randn({groups, n, k}) * 4).to(torch::kBFloat16);
    const auto row_scale = torch::rand({groups, n}) + 0.5;
    const auto upstream = torch::randn({groups, batch, k});
    auto run = [&](bool avx512) {
      const Kernels kernels(avx512);
      auto y = s0.clone();
      const auto [presence, argmax] = heads::softmax_max_over_cells_(y, row_scale, batch);
      auto ds = y.clone();
      heads::softmax_max_over_cells_backward_(ds, presence, argmax, upstream, row_scale, batch);
      return std::make_tuple(y, presence, argmax, ds);
    };
    const auto [y1, p1, a1, ds1] = run(false);
    const auto [y2, p2, a2, ds2] = run(true);
    // One bf16 step is 2^-8 relative; the fp32 values before rounding differ by a few ulp.
    const auto yf = y1.to(torch::kFloat32);
    EXPECT_LE((y2.to(torch::kFloat32) - yf).abs().max().item<float>(), yf.abs().max().item<float>() / 128);
    EXPECT_TRUE(torch::allclose(p2, p1, 1e-5, 1e-7)) << (p2 - p1).abs().max();
    // A different argmax is only allowed where the two cells' values tie to fp32 rounding.
    const auto cell_values = y1.to(torch::kFloat32).view({groups, batch, cells, k});
    const auto at1 = cell_values.gather(2, a1.to(torch::kInt64).unsqueeze(2));
    const auto at2 = cell_values.gather(2, a2.to(torch::kInt64).unsqueeze(2));
    EXPECT_TRUE(torch::allclose(at1, at2, 1e-2, 0)) << "argmax differs beyond a near-tie";
    EXPECT_GE(a1.eq(a2).to(torch::kFloat32).mean().item<float>(), 0.95);
    const auto df = ds1.to(torch::kFloat32);
    EXPECT_LE((ds2.to(torch::kFloat32) - df).abs().max().item<float>(), 1e-2 * (1 + df.abs().max().item<float>()));
    // Cells that hold no prototype's max: zero rows in both.
    const auto holds = torch::zeros({groups, batch, cells}, torch::kInt64)
                           .scatter_add_(2, a2.to(torch::kInt64), torch::ones_like(a2, torch::kInt64));
    const auto empty_rows = holds.view({groups, n}).eq(0);
    if (k == 2) EXPECT_GT(empty_rows.sum().item<int64_t>(), 0);
    for (const auto& ds : {ds1, ds2}) {
      EXPECT_EQ(ds.to(torch::kFloat32).abs().sum(2).masked_select(empty_rows).sum().item<float>(), 0.0f);
    }
  }
  // NaN similarities, and a row scale that overflows scale * s to infinity: an error on both paths.
  for (const bool avx512 : {false, true}) {
    const Kernels kernels(avx512);
    auto s = torch::randn({1, 4, 20}).to(torch::kBFloat16);
    s[0][3][17] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_THROW(heads::softmax_max_over_cells_(s, torch::Tensor(), 2), c10::Error) << avx512;
    auto large = torch::full({1, 4, 20}, 1e30).to(torch::kBFloat16);
    const auto overflowing = torch::full({1, 4}, 1e30);
    EXPECT_THROW(heads::softmax_max_over_cells_(large, overflowing, 2), c10::Error) << avx512;
  }
}

TEST(FusedPresence, BackwardRunsOnceBecauseItReusesTheSoftmaxBuffer) {
  const auto prototypes = torch::randn({1, 5, 3}).requires_grad_(true);
  const auto presence = heads::prototype_presence(torch::randn({1, 4, 3}), prototypes, 2, 0.1);
  presence.sum().backward({}, /*retain_graph=*/true);
  EXPECT_THROW(presence.sum().backward(), c10::Error);
}

TEST(FusedPresence, NonFiniteSimilaritiesAreAnErrorNotAPresence) {
  auto z = torch::randn({1, 4, 3});
  z[0][2][1] = std::numeric_limits<float>::quiet_NaN();
  try {
    heads::prototype_presence(z, torch::randn({1, 5, 3}), 2, 0.1);
    ADD_FAILURE() << "no error";
  } catch (const c10::Error& error) {
    EXPECT_NE(std::string(error.what()).find("non-finite"), std::string::npos) << error.what();
  }
}

TEST(ProtoQuantHead, Bf16ModeStaysCloseToFp32) {
  torch::manual_seed(8);
  const auto prototypes = torch::randn({16, 8});
  const auto features = torch::randn({4, 8, 3, 3});
  auto fp32 = build_head(prototypes, 3, 0.1);
  Registry& registry = testing::builtin_registry();
  Params params = Params::defaults(registry.heads.find("protoquant")->schema);
  params.set("dtype", std::string("bf16"));
  BuildContext context;
  context.num_classes = 3;
  context.prototypes = prototypes;
  auto bf16 = *registry.heads.build("protoquant", params, context);
  ASSERT_TRUE(bf16->set_class_weights(fp32->class_weights().detach()).ok());
  for (bool training : {true, false}) {
    fp32->train(training);
    bf16->train(training);
    const auto a = fp32->forward(features), b = bf16->forward(features);
    EXPECT_EQ(b.logits.scalar_type(), torch::kFloat32);
    EXPECT_TRUE(torch::allclose(a.presence, b.presence, 0.05, 0.02)) << (a.presence - b.presence).abs().max();
  }
  // Features stored in 16 bits (a bf16 or fp16 feature cache) go in as stored: the same result as
  // the same values widened to fp32, in training (bf16 rows straight from the stored ones) and in
  // evaluation (widened by the head), and a gradient for the prototypes.
  EXPECT_TRUE(bf16->reads_16bit_features());
  for (const auto stored_dtype : {torch::kBFloat16, torch::kFloat16}) {
    const auto stored = features.to(stored_dtype).contiguous(at::MemoryFormat::ChannelsLast);
    const auto widened = stored.to(torch::kFloat32);
    for (bool training : {true, false}) {
      bf16->train(training);
      const auto a = bf16->forward(widened), b = bf16->forward(stored);
      EXPECT_EQ(b.logits.scalar_type(), torch::kFloat32);
      EXPECT_TRUE(torch::allclose(a.logits, b.logits, 1e-6, 1e-6)) << stored_dtype << training;
    }
    bf16->train(true);
    bf16->zero_grad();
    bf16->forward(stored).logits.sum().backward();
    EXPECT_TRUE(bf16->prototypes().grad().defined());
    EXPECT_GT(bf16->prototypes().grad().abs().sum().item<double>(), 0.0);
  }
}

TEST(ProtoQuantHead, TrainingAndEvaluationComputeTheSameLogits) {
  torch::manual_seed(9);
  const auto prototypes = torch::randn({12, 6});
  const auto features = torch::randn({5, 6, 4, 3});
  auto head = build_head(prototypes, 4, 0.1);
  head->train();
  const auto trained = head->forward(features);
  head->eval();
  const auto evaluated = head->forward(features);
  EXPECT_TRUE(torch::allclose(trained.logits, evaluated.logits, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(trained.presence, evaluated.presence, 1e-5, 1e-6));
}

}  // namespace
}  // namespace protoquant
