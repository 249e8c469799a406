#include <cmath>
#include <sstream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "protoquant/fused_adam.h"
#include "protoquant/host_memory.h"
#include "protoquant/trainer.h"

namespace protoquant {
namespace {

TEST(Schedule, LinearWarmupThenCosineToZero) {
  TrainSettings s;
  s.warmup_epochs = 0.5;  // 5 steps of a 10-step epoch
  const int64_t total = 30, per_epoch = 10;
  EXPECT_DOUBLE_EQ(lr_factor(s, 0, total, per_epoch), 1.0 / 5);
  EXPECT_DOUBLE_EQ(lr_factor(s, 4, total, per_epoch), 1.0);
  EXPECT_DOUBLE_EQ(lr_factor(s, 5, total, per_epoch), 1.0);  // cosine starts at its peak
  EXPECT_NEAR(lr_factor(s, 5 + 25 / 2, total, per_epoch), 0.5 * (1 + std::cos(M_PI * 12.0 / 25.0)), 1e-12);
  EXPECT_NEAR(lr_factor(s, 29, total, per_epoch), 0.5 * (1 + std::cos(M_PI * 24.0 / 25.0)), 1e-12);
  s.schedule = "constant";
  EXPECT_DOUBLE_EQ(lr_factor(s, 20, total, per_epoch), 1.0);
}

TEST(CrossEntropy, LabelSmoothingMatchesItsDefinition) {
  const auto logits = torch::tensor({{2.0, 0.5, -1.0}, {0.1, 0.2, 0.3}});
  const auto targets = torch::tensor({0, 2}, torch::kInt64);
  const double eps = 0.1;
  const auto logp = torch::log_softmax(logits, 1);
  // (1 - eps) * NLL + eps * mean over classes of -log p.
  const auto expected = ((1 - eps) * -logp.gather(1, targets.view({-1, 1})).squeeze(1) + eps * -logp.mean(1)).mean();
  EXPECT_NEAR(cross_entropy(logits, targets, eps).item<double>(), expected.item<double>(), 1e-6);
  // And ATen's own, with and without smoothing.
  for (double e : {0.0, eps}) {
    const auto aten = torch::nn::functional::cross_entropy(
        logits, targets, torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(e));
    EXPECT_NEAR(cross_entropy(logits, targets, e).item<double>(), aten.item<double>(), 1e-6) << e;
  }
}

// FusedAdam against LibTorch's own Adam: the same trajectory (to rounding) with and without weight
// decay, a parameter that skips a step, and state that moves between the two through a checkpoint.
TEST(FusedAdam, FollowsLibTorchAdamAndSharesItsState) {
  for (const double decay : {0.0, 0.05}) {
    torch::manual_seed(3);
    const std::vector<torch::Tensor> start = {torch::randn({1000}), torch::randn({7, 3})};
    auto clone = [&] {
      std::vector<torch::Tensor> out;
      for (const auto& t : start) out.push_back(t.clone().requires_grad_(true));
      return out;
    };
    auto fused_params = clone(), plain_params = clone();
    const auto options = torch::optim::AdamOptions(1e-2).weight_decay(decay);
    FusedAdam fused(fused_params, options);
    torch::optim::Adam plain(plain_params, options);
    auto step = [&](torch::optim::Optimizer& optimizer, std::vector<torch::Tensor>& params, int64_t i) {
      torch::manual_seed(100 + i);
      for (size_t j = 0; j < params.size(); ++j) {
        // The second parameter has no gradient in step 2: Adam leaves it and its state alone.
        params[j].mutable_grad() = (j == 1 && i == 2) ? torch::Tensor() : torch::randn(params[j].sizes());
      }
      optimizer.step();
    };
    for (int64_t i = 0; i < 6; ++i) {
      step(fused, fused_params, i);
      step(plain, plain_params, i);
    }
    for (size_t j = 0; j < start.size(); ++j) {
      EXPECT_FALSE(torch::equal(fused_params[j], start[j]));
      EXPECT_TRUE(torch::allclose(fused_params[j], plain_params[j], 1e-5, 1e-6))
          << decay << " " << (fused_params[j] - plain_params[j]).abs().max();
    }
    // The fused optimizer's state continues in LibTorch's Adam, and the other way round.
    torch::serialize::OutputArchive fused_out, plain_out;
    fused.save(fused_out);
    plain.save(plain_out);
    std::ostringstream fused_bytes, plain_bytes;
    fused_out.save_to(fused_bytes);
    plain_out.save_to(plain_bytes);
    auto fused_copy = clone(), plain_copy = clone();
    for (size_t j = 0; j < start.size(); ++j) {
      torch::NoGradGuard no_grad;
      fused_copy[j].copy_(fused_params[j]);
      plain_copy[j].copy_(plain_params[j]);
    }
    torch::optim::Adam plain_resumed(fused_copy, options);
    FusedAdam fused_resumed(plain_copy, options);
    torch::serialize::InputArchive fused_in, plain_in;
    std::istringstream fused_stream(fused_bytes.str()), plain_stream(plain_bytes.str());
    fused_in.load_from(fused_stream);
    plain_in.load_from(plain_stream);
    plain_resumed.load(fused_in);
    fused_resumed.load(plain_in);
    step(plain_resumed, fused_copy, 6);
    step(fused_resumed, plain_copy, 6);
    for (size_t j = 0; j < start.size(); ++j) {
      EXPECT_TRUE(torch::allclose(fused_copy[j], plain_copy[j], 1e-5, 1e-6)) << decay;
    }
  }
}

TEST(FusedAdam, HandsWhatItDoesNotFuseToLibTorchAdam) {
  // fp64 parameters take LibTorch's path: bit-identical results.
  auto a = torch::randn({5}, torch::kFloat64).requires_grad_(true);
  auto b = a.detach().clone().requires_grad_(true);
  FusedAdam fused({a}, torch::optim::AdamOptions(0.1));
  torch::optim::Adam plain({b}, torch::optim::AdamOptions(0.1));
  for (int i = 0; i < 3; ++i) {
    const auto g = torch::randn({5}, torch::kFloat64);
    a.mutable_grad() = g.clone();
    b.mutable_grad() = g.clone();
    fused.step();
    plain.step();
  }
  EXPECT_TRUE(torch::equal(a, b));
  // A channels-last conv weight (the black box's) beside a plain one: the whole step is Adam's.
  auto w = torch::randn({4, 3, 2, 2}).contiguous(at::MemoryFormat::ChannelsLast).requires_grad_(true);
  auto v = torch::randn({6}).requires_grad_(true);
  auto w2 = w.detach().clone().contiguous(at::MemoryFormat::ChannelsLast).requires_grad_(true);
  auto v2 = v.detach().clone().requires_grad_(true);
  FusedAdam mixed({w, v}, torch::optim::AdamOptions(0.1));
  torch::optim::Adam reference({w2, v2}, torch::optim::AdamOptions(0.1));
  for (int i = 0; i < 3; ++i) {
    const auto gw = torch::randn({4, 3, 2, 2}).contiguous(at::MemoryFormat::ChannelsLast), gv = torch::randn({6});
    w.mutable_grad() = gw.clone();
    v.mutable_grad() = gv.clone();
    w2.mutable_grad() = gw.clone();
    v2.mutable_grad() = gv.clone();
    mixed.step();
    reference.step();
  }
  EXPECT_TRUE(torch::equal(w, w2));
  EXPECT_TRUE(torch::equal(v, v2));
}

TEST(Trainer, FitsALinearProblemAndIsDeterministic) {
  auto run = [] {
    torch::manual_seed(0);
    const auto x = torch::randn({256, 4});
    const auto y = x.matmul(torch::tensor({1.0f, -2.0f, 0.5f, 3.0f})).gt(0).to(torch::kInt64);
    TensorSource data(x, y);
    torch::nn::Linear model(4, 2);
    TrainSettings s;
    s.epochs = 5;
    s.batch_size = 32;
    s.lr = 0.05;
    auto summary = train(s, model->parameters(), data,
                         [&](const Batch& b) { return cross_entropy(model->forward(b.images), b.labels, 0.0); },
                         {"test", 7, torch::kCPU, nullptr});
    EXPECT_TRUE(summary.ok()) << summary.status();
    EXPECT_EQ(summary->steps, 5 * 8);
    const double accuracy = model->forward(x).argmax(1).eq(y).to(torch::kFloat64).mean().item<double>();
    return std::make_pair(summary->last_epoch_loss, accuracy);
  };
  const auto first = run();
  const auto second = run();
  EXPECT_GT(first.second, 0.95);
  EXPECT_EQ(first.first, second.first);  // same seed, same threads: bit-identical
}

TEST(Trainer, DivergenceIsReportedNotIgnored) {
  const auto x = torch::randn({64, 2});
  TensorSource data(x, torch::zeros({64}, torch::kInt64));
  auto w = torch::ones({1}, torch::requires_grad());
  TrainSettings s;
  s.epochs = 1;
  auto summary = train(s, {w}, data, [&](const Batch&) { return (w * std::numeric_limits<float>::quiet_NaN()).sum(); },
                       {"nan", 0, torch::kCPU, nullptr});
  ASSERT_FALSE(summary.ok());
  EXPECT_NE(summary.status().message().find("loss became nan"), std::string::npos) << summary.status();
}

TEST(TensorSource, ChannelsLastMapsStayChannelsLastAndHalfPrecisionIsWidened) {
  torch::manual_seed(2);
  const auto nchw = torch::randn({9, 5, 3, 4});
  const auto labels = torch::arange(9, torch::kInt64);
  const auto indices = torch::tensor({7, 2, 2, 0}, torch::kInt64);
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    TensorSource source(nchw.to(dtype).contiguous(at::MemoryFormat::ChannelsLast), labels);
    auto batch = source.get(indices);
    ASSERT_TRUE(batch.ok()) << batch.status();
    EXPECT_TRUE(batch->images.is_contiguous(at::MemoryFormat::ChannelsLast));
    EXPECT_EQ(batch->images.scalar_type(), torch::kFloat32);
    EXPECT_TRUE(torch::equal(batch->images, nchw.to(dtype).to(torch::kFloat32).index_select(0, indices)));
    EXPECT_TRUE(torch::equal(batch->labels, indices));
    // On request (a head that reads 16-bit features), batches keep the stored dtype.
    auto stored = source.in_stored_dtype().get(indices);
    ASSERT_TRUE(stored.ok()) << stored.status();
    EXPECT_EQ(stored->images.scalar_type(), dtype);
    EXPECT_TRUE(stored->images.is_contiguous(at::MemoryFormat::ChannelsLast));
    EXPECT_TRUE(torch::equal(stored->images, nchw.to(dtype).index_select(0, indices)));
  }
}

TEST(HostMemory, LargeTensorsSitOnHugePageBoundariesSmallOnesAreOrdinary) {
  const auto large = empty_on_huge_pages({40, 1 << 20}, torch::kFloat32);  // 160 MiB
  EXPECT_EQ(reinterpret_cast<uintptr_t>(large.data_ptr()) % (uintptr_t{1} << 21), 0u);
  EXPECT_TRUE(large.is_contiguous());
  large.fill_(2.5f);  // writable, all of it
  EXPECT_EQ(large.sum().item<double>(), 2.5 * 40 * (1 << 20));
  const auto small = empty_on_huge_pages({3, 4}, torch::kBFloat16);
  EXPECT_EQ(small.sizes(), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(small.scalar_type(), torch::kBFloat16);
  EXPECT_GT(available_memory_bytes(), 0u);
}

TEST(MapBatches, ConcatenatesInOrder) {
  const auto x = torch::arange(10, torch::kFloat32).view({10, 1});
  TensorSource data(x, torch::zeros({10}, torch::kInt64));
  auto out = map_batches(data, 3, torch::kCPU, [](const Batch& b) { return b.images * 2; }, "double");
  ASSERT_TRUE(out.ok());
  EXPECT_TRUE(torch::equal(*out, x * 2));
}

}  // namespace
}  // namespace protoquant
