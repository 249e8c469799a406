// Mixup/CutMix, soft-target cross-entropy, per-epoch checkpoints with resume, and best-epoch
// selection, each against an independent computation.
#include <sys/resource.h>

#include <csignal>
#include <cstdlib>
#include <cstring>

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "protoquant/atomic_file.h"
#include "protoquant/batch_mixing.h"
#include "protoquant/checkpoint.h"
#include "protoquant/trainer.h"
#include "test_support.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;

// Image b is filled with the constant b + 1, so every pixel tells which sample it came from.
Batch constant_batch(int64_t n, int64_t size) {
  Batch batch;
  batch.images = torch::arange(1, n + 1, torch::kFloat32).view({n, 1, 1, 1}).expand({n, 2, size, size}).contiguous();
  batch.labels = torch::arange(n, torch::kInt64);
  return batch;
}

TEST(BatchMixing, MixupBlendsWithTheReversedBatchAndMixesTargetsEqually) {
  TrainSettings s;
  s.mixup = 0.8;
  auto generator = at::detail::createCPUGenerator(3);
  Batch batch = constant_batch(4, 5);
  mix_batch(batch, 4, s, generator);
  ASSERT_TRUE(batch.targets.defined());
  EXPECT_TRUE(torch::allclose(batch.targets.sum(1), torch::ones({4})));
  for (int64_t b = 0; b < 4; ++b) {
    const double lambda = batch.targets[b][b].item<double>();  // the share of sample b itself
    const double expected = lambda * (b + 1) + (1 - lambda) * (4 - b);
    EXPECT_NEAR(batch.images[b][0][2][3].item<double>(), expected, 1e-5);
    EXPECT_NEAR(batch.targets[b][3 - b].item<double>(), b == 3 - b ? lambda : 1 - lambda, 1e-6);
  }
}

TEST(BatchMixing, CutmixTargetsEqualTheShareOfPastedPixels) {
  TrainSettings s;
  s.cutmix = 1.0;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    auto generator = at::detail::createCPUGenerator(seed);
    Batch batch = constant_batch(3, 16);
    mix_batch(batch, 3, s, generator);
    const auto own = batch.images[0].eq(1.0).to(torch::kFloat64).mean().item<double>();
    EXPECT_NEAR(batch.targets[0][0].item<double>(), own, 1e-6) << "seed " << seed;
    EXPECT_NEAR(batch.targets[0][2].item<double>(), 1.0 - own, 1e-6) << "seed " << seed;
  }
}

TEST(BatchMixing, SoftTargetCrossEntropyMatchesItsDefinition) {
  Batch batch;
  batch.labels = torch::tensor({0, 1}, torch::kInt64);
  batch.targets = torch::tensor({{0.7f, 0.3f, 0.0f}, {0.0f, 0.4f, 0.6f}});
  const auto logits = torch::tensor({{1.0f, -0.5f, 2.0f}, {0.3f, 0.2f, 0.1f}});
  const double eps = 0.1;
  double expected = 0;
  for (int b = 0; b < 2; ++b) {
    const auto logp = torch::log_softmax(logits[b], 0);
    for (int c = 0; c < 3; ++c) {
      expected -= (batch.targets[b][c].item<double>() * (1 - eps) + eps / 3) * logp[c].item<double>();
    }
  }
  EXPECT_NEAR(cross_entropy(logits, batch, eps).item<double>(), expected / 2, 1e-6);
  // One-hot soft targets give the hard-label loss.
  batch.targets = torch::one_hot(batch.labels, 3).to(torch::kFloat32);
  EXPECT_NEAR(cross_entropy(logits, batch, eps).item<double>(), cross_entropy(logits, batch.labels, eps).item<double>(),
              1e-6);
}

struct LinearProblem {
  torch::Tensor x, y;
  LinearProblem() {
    auto generator = at::detail::createCPUGenerator(11);
    x = torch::randn({192, 4}, generator);
    y = x.matmul(torch::tensor({1.0f, -2.0f, 0.5f, 3.0f})).gt(0).to(torch::kInt64);
  }
};

// Trains a fresh linear model (seeded init) for `epochs`, checkpointing into `checkpoint`.
absl::StatusOr<std::pair<TrainSummary, torch::Tensor>> train_linear(const std::filesystem::path& checkpoint,
                                                                    bool resume, TrainSettings s = {}) {
  LinearProblem problem;
  TensorSource data(problem.x, problem.y);
  torch::manual_seed(5);
  auto model = std::make_shared<torch::nn::LinearImpl>(4, 2);
  s.epochs = s.epochs > 1 ? s.epochs : 4;
  s.batch_size = 32;
  s.lr = 0.05;
  s.mixup = 0.4;  // mixing draws must resume in step too
  TrainOptions options{"linear", 7, torch::kCPU, nullptr};
  options.modules = {model};
  options.checkpoint = checkpoint;
  options.resume = resume;
  options.num_classes = 2;
  options.validate = [&]() -> absl::StatusOr<double> {
    return model->forward(problem.x).argmax(1).eq(problem.y).to(torch::kFloat64).mean().item<double>();
  };
  auto summary = train(s, model->parameters(), data,
                       [&](const Batch& b) { return cross_entropy(model->forward(b.images), b, 0.0); }, options);
  if (!summary.ok()) return summary.status();
  return std::make_pair(*summary, torch::cat({model->weight.flatten(), model->bias}).detach().clone());
}

TEST(Checkpoint, ResumedTrainingEqualsUninterruptedTraining) {
  testing::TempDir dir;
  auto full = train_linear(dir / "full.pt", false);
  ASSERT_TRUE(full.ok()) << full.status();

  setenv("PROTOQUANT_ABORT_AFTER", "linear:2", 1);
  auto stopped = train_linear(dir / "part.pt", false);
  unsetenv("PROTOQUANT_ABORT_AFTER");
  ASSERT_FALSE(stopped.ok());
  EXPECT_EQ(stopped.status().code(), absl::StatusCode::kAborted);
  ASSERT_TRUE(std::filesystem::exists(dir / "part.pt"));

  auto resumed = train_linear(dir / "part.pt", true);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->first.resumed_epochs, 2);
  EXPECT_EQ(resumed->first.steps, full->first.steps);
  EXPECT_TRUE(torch::equal(resumed->second, full->second)) << resumed->second << full->second;
  EXPECT_EQ(resumed->first.last_epoch_loss, full->first.last_epoch_loss);
  // The loss curve of the report survives the interruption: all four epochs, the same values.
  ASSERT_EQ(full->first.epoch_losses.size(), 4U);
  EXPECT_EQ(resumed->first.epoch_losses, full->first.epoch_losses);
  EXPECT_EQ(full->first.epoch_losses.back(), full->first.last_epoch_loss);
}

TEST(Checkpoint, ValidateEachEpochRecordsTheCurveWithoutKeepingABestEpoch) {
  LinearProblem problem;
  TensorSource data(problem.x, problem.y);
  auto model = std::make_shared<torch::nn::LinearImpl>(4, 2);
  TrainSettings s;
  s.epochs = 3;
  s.batch_size = 32;
  s.validate_each_epoch = true;
  TrainOptions options{"curve", 1, torch::kCPU, nullptr};
  options.modules = {model};
  std::vector<double> seen;
  options.validate = [&]() -> absl::StatusOr<double> {
    seen.push_back(model->forward(problem.x).argmax(1).eq(problem.y).to(torch::kFloat64).mean().item<double>());
    return seen.back();
  };
  auto summary = train(s, model->parameters(), data,
                       [&](const Batch& b) { return cross_entropy(model->forward(b.images), b.labels, 0.0); }, options);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->validation, seen);
  EXPECT_EQ(summary->validation.size(), 3U);
  EXPECT_EQ(summary->best_epoch, -1);  // nothing restored: the last epoch's model stays
  EXPECT_EQ(summary->epoch_losses.size(), 3U);
  // The loss it records is the mean over each epoch's steps: the linear problem is learnable.
  EXPECT_LT(summary->epoch_losses.back(), summary->epoch_losses.front());
}

TEST(Checkpoint, KeepBestRestoresTheBestValidatedEpoch) {
  LinearProblem problem;
  TensorSource data(problem.x, problem.y);
  auto model = std::make_shared<torch::nn::LinearImpl>(4, 2);
  TrainSettings s;
  s.epochs = 4;
  s.batch_size = 32;
  s.keep_best = true;
  TrainOptions options{"best", 1, torch::kCPU, nullptr};
  options.modules = {model};
  const std::vector<double> scores = {0.2, 0.9, 0.5, 0.7};  // epoch 2 (index 1) is best
  int64_t calls = 0;
  std::vector<ModuleState> states;
  options.validate = [&]() -> absl::StatusOr<double> {
    states.push_back(snapshot_state(*model));
    return scores[calls++];
  };
  auto summary = train(s, model->parameters(), data,
                       [&](const Batch& b) { return cross_entropy(model->forward(b.images), b.labels, 0.0); }, options);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->best_epoch, 1);
  EXPECT_DOUBLE_EQ(summary->best_score, 0.9);
  EXPECT_EQ(summary->validation, scores);
  const ModuleState now = snapshot_state(*model);
  ASSERT_EQ(now.size(), states[1].size());
  for (size_t i = 0; i < now.size(); ++i) EXPECT_TRUE(torch::equal(now[i], states[1][i]));
  EXPECT_FALSE(torch::equal(now[0], states[3][0]));
}

TEST(Checkpoint, ACheckpointOfAnotherStageIsRefused) {
  testing::TempDir dir;
  auto a = std::make_shared<torch::nn::LinearImpl>(2, 2);
  ASSERT_TRUE(save_checkpoint(dir / "c.pt", {}, {a}, nullptr).ok());
  TrainingProgress progress;
  auto b = std::make_shared<torch::nn::LinearImpl>(2, 2);
  const auto status = load_checkpoint(dir / "c.pt", progress, {a, b}, nullptr);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("c.pt"), std::string::npos) << status;
}

// A write that fails mid-file (a full disk; here the process's file-size limit, which fails the
// same write(2) with EFBIG) is one error naming the file and the OS's reason, not an abort from
// LibTorch's zip writer; nothing half-written is left, and the same save succeeds once the
// space is back.
TEST(Checkpoint, AFailedWriteIsAnErrorAndLeavesNothingHalfWritten) {
  testing::TempDir dir;
  auto model = std::make_shared<torch::nn::LinearImpl>(256, 256);  // ~260 KB of weights
  const auto path = dir / "checkpoint.pt";
  rlimit before{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &before), 0);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit small = before;
  small.rlim_cur = 64 * 1024;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  const absl::Status failed = save_checkpoint(path, {}, {model}, nullptr);
  ::setrlimit(RLIMIT_FSIZE, &before);
  std::signal(SIGXFSZ, old_handler);
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.message().find(path.string()), std::string::npos) << failed;
  EXPECT_NE(failed.message().find(std::strerror(EFBIG)), std::string::npos) << failed;
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 0) << "no temporary left";

  ASSERT_TRUE(save_checkpoint(path, {}, {model}, nullptr).ok());
  EXPECT_TRUE(read_verified_checkpoint(path).ok());
}

TEST(Checkpoint, ADamagedCheckpointFailsItsChecksumAndIsSetAside) {
  testing::TempDir dir;
  auto model = std::make_shared<torch::nn::LinearImpl>(8, 8);
  const auto path = dir / "checkpoint.pt";
  ASSERT_TRUE(save_checkpoint(path, {}, {model}, nullptr).ok());
  EXPECT_TRUE(set_aside_bad_checkpoint(path));  // a good one stays
  std::string bytes = testing::read_text(path);
  bytes[bytes.size() / 2] ^= 1;
  ASSERT_TRUE(write_file_atomic(path, bytes).ok());
  TrainingProgress progress;
  const absl::Status status = load_checkpoint(path, progress, {model}, nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_NE(status.message().find("checksum mismatch"), std::string::npos) << status;
  EXPECT_FALSE(set_aside_bad_checkpoint(path));
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(fs::exists(path.string() + ".bad"));
  EXPECT_FALSE(set_aside_bad_checkpoint(path));  // none there: nothing to resume
}

}  // namespace
}  // namespace protoquant
