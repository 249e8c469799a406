// protoquant::BatchNorm2d (batch_norm.h): unsynchronised it is torch::nn::BatchNorm2d; synchronised
// in a group of two ranks holding the same batch (a stand-in group whose all-reduce doubles, as a
// twin rank's identical contribution would), its forward, its input and parameter gradients and
// its running statistics equal torch's batch norm on the two ranks' batches concatenated.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "protoquant/batch_norm.h"
#include "protoquant/process_group.h"

namespace protoquant {
namespace {

// Rank 0 of two ranks that hold identical data: a sum over the ranks is twice this rank's value.
class TwinGroup : public Collectives {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 2; }
  void all_reduce_sum(const std::vector<torch::Tensor>& tensors) override {
    torch::NoGradGuard no_grad;
    for (const auto& t : tensors) t.mul_(2);
  }
  void broadcast(const std::vector<torch::Tensor>&, int) override {}
  std::vector<torch::Tensor> all_gather(const torch::Tensor& t) override { return {t, t}; }
  void barrier() override {}
};

struct Alone {
  ~Alone() { set_collectives(nullptr); }
};

TEST(SyncBatchNorm, UnsynchronisedItIsTorchsBatchNorm) {
  torch::manual_seed(1);
  BatchNorm2d ours(torch::nn::BatchNormOptions(6).momentum(c10::nullopt));
  torch::nn::BatchNorm2d torchs(torch::nn::BatchNormOptions(6).momentum(c10::nullopt));
  for (int step = 0; step < 3; ++step) {
    const auto x = torch::randn({4, 6, 5, 5}) * 3 + 1;
    EXPECT_TRUE(torch::allclose(ours->forward(x), torchs->forward(x), 1e-6, 1e-6));
  }
  EXPECT_TRUE(torch::allclose(ours->running_mean, torchs->running_mean, 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(ours->running_var, torchs->running_var, 1e-6, 1e-6));
  EXPECT_EQ(ours->num_batches_tracked.item<int64_t>(), 3);
  ours->eval();
  torchs->eval();
  const auto x = torch::randn({2, 6, 5, 5});
  EXPECT_TRUE(torch::allclose(ours->forward(x), torchs->forward(x), 1e-6, 1e-6));
  // The same parameter and buffer names: weights saved from one load into the other.
  std::vector<std::string> a, b;
  for (const auto& item : ours->named_parameters()) a.push_back(item.key());
  for (const auto& item : ours->named_buffers()) a.push_back(item.key());
  for (const auto& item : torchs->named_parameters()) b.push_back(item.key());
  for (const auto& item : torchs->named_buffers()) b.push_back(item.key());
  EXPECT_EQ(a, b);
}

TEST(SyncBatchNorm, SynchronisedItNormalisesWithTheGlobalBatchAndBackpropagatesThroughIt) {
  Alone alone;
  set_collectives(std::make_shared<TwinGroup>());
  torch::manual_seed(2);
  const auto data = (torch::randn({3, 5, 4, 4}) * 2 + 0.5).contiguous(torch::MemoryFormat::ChannelsLast);
  const auto upstream = torch::randn({3, 5, 4, 4});
  BatchNorm2d ours(5);
  ASSERT_EQ(synchronise_batch_norm(*ours, true).value(), 1);
  {
    torch::NoGradGuard no_grad;
    ours->weight.uniform_(0.5, 1.5);
    ours->bias.uniform_(-0.5, 0.5);
  }
  torch::nn::BatchNorm2d torchs(5);
  {
    torch::NoGradGuard no_grad;
    torchs->weight.copy_(ours->weight);
    torchs->bias.copy_(ours->bias);
  }
  // This rank's half of the global loss, as the trainer weights it.
  const auto x = data.clone().requires_grad_(true);
  const auto y = ours->forward(x);
  (0.5 * (y * upstream).sum()).backward();
  // One process on both ranks' rows.
  const auto x1 = data.clone().requires_grad_(true), x2 = data.clone().requires_grad_(true);
  const auto both = torchs->forward(torch::cat({x1, x2}));
  (0.5 * (both * torch::cat({upstream, upstream})).sum()).backward();

  EXPECT_TRUE(torch::allclose(y, both.slice(0, 0, 3), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(x.grad(), x1.grad(), 1e-5, 1e-5)) << (x.grad() - x1.grad()).abs().max();
  // The parameters' gradients are this rank's share; the trainer's all-reduce doubles them.
  EXPECT_TRUE(torch::allclose(2 * ours->weight.grad(), torchs->weight.grad(), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(2 * ours->bias.grad(), torchs->bias.grad(), 1e-5, 1e-5));
  // Unbiased over the 2 x 3 x 4 x 4 rows, as torch keeps it.
  EXPECT_TRUE(torch::allclose(ours->running_mean, torchs->running_mean, 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(ours->running_var, torchs->running_var, 1e-6, 1e-6));
}

TEST(SyncBatchNorm, ABatchNormThatCannotSynchroniseIsNamed) {
  torch::nn::Sequential body(torch::nn::Conv2d(3, 4, 3), BatchNorm2d(4), torch::nn::BatchNorm2d(4));
  EXPECT_EQ(synchronise_batch_norm(*body, false).value(), 1);
  const auto refused = synchronise_batch_norm(*body, true);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(std::string(refused.status().message()).find("batch norm '2'"), std::string::npos) << refused.status();
}

}  // namespace
}  // namespace protoquant
