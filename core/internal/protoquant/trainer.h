// The training machinery every stage shares: optimiser (Adam, AdamW, SGD), linear warm-up +
// cosine schedule, label-smoothed cross-entropy, batch-level Mixup/CutMix, seeded shuffling,
// per-epoch validation with best-epoch selection, atomic per-epoch checkpoints and resume, and
// progress reporting. A stage supplies its trainable parameters, a BatchSource and a loss
// function; the trainer owns the loop. Device-agnostic: batches move to the stage's device, so the same loop runs on CUDA
// and can later be wrapped for data-parallel training (c10d) without touching the stages.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include "protoquant/collectives.h"
#include "protoquant/dataset.h"
#include "protoquant/params.h"

namespace protoquant {

struct TrainSettings {
  int64_t epochs = 1;
  int64_t batch_size = 128;
  int64_t eval_batch_size = 1024;
  std::string optimizer = "adam";
  double lr = 1e-3;
  double weight_decay = 0.0;
  double momentum = 0.9;
  std::string schedule = "cosine";
  double warmup_epochs = 0.0;
  double label_smoothing = 0.0;
  double mixup = 0.0;            // Beta(alpha, alpha) of Mixup; 0 = off
  double cutmix = 0.0;           // Beta(alpha, alpha) of CutMix; 0 = off
  double mix_probability = 1.0;  // chance that a batch is mixed at all
  double mix_switch = 0.5;       // with both on: chance of CutMix rather than Mixup
  bool keep_best = false;        // validate after every epoch, keep the best epoch's state
  bool validate_each_epoch = false;  // validate after every epoch for the curves only (keep_best implies it)

  static TrainSettings from(const Params& params);  // a stage table of the manifest
};

// Where a stage's batches come from: decoded images or cached feature maps.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual int64_t size() const = 0;
  virtual absl::StatusOr<Batch> get(const torch::Tensor& indices) = 0;
  // The loops announce the next batch before computing on the current one.
  virtual void prefetch(const torch::Tensor& /*indices*/) {}
};

// A split held in memory as tensors (e.g. cached features); index_select per batch.
class TensorSource : public BatchSource {
 public:
  TensorSource(torch::Tensor inputs, torch::Tensor labels);
  int64_t size() const override { return inputs_.size(0); }
  absl::StatusOr<Batch> get(const torch::Tensor& indices) override;
  const torch::Tensor& inputs() const { return inputs_; }
  const torch::Tensor& labels() const { return labels_; }
  // The same tensors, served in their stored dtype: for a consumer that reads 16-bit features
  // itself (Head::reads_16bit_features), so the batch is neither widened nor narrowed again.
  TensorSource in_stored_dtype() const;

 private:
  torch::Tensor inputs_, labels_;
  bool widen_ = true;  // 16-bit inputs become fp32 per batch (what stages compute in)
};

// One split of a Dataset; augment = false serves the eval transform even for the train split.
class DatasetSource : public BatchSource {
 public:
  DatasetSource(Dataset& dataset, std::string split, bool augment = true)
      : dataset_(dataset), split_(std::move(split)), augment_(augment) {}
  int64_t size() const override { return dataset_.size(split_); }
  absl::StatusOr<Batch> get(const torch::Tensor& indices) override {
    return augment_ ? dataset_.get_batch(split_, indices) : dataset_.get_eval_batch(split_, indices);
  }
  void prefetch(const torch::Tensor& indices) override { dataset_.prefetch(split_, indices, augment_); }

 private:
  Dataset& dataset_;
  std::string split_;
  bool augment_;
};

// Rows [begin, end) of another source, numbered from 0: one rank's share of a split.
class ShardSource : public BatchSource {
 public:
  ShardSource(BatchSource& source, int64_t begin, int64_t end) : source_(source), begin_(begin), end_(end) {}
  int64_t size() const override { return end_ - begin_; }
  absl::StatusOr<Batch> get(const torch::Tensor& indices) override { return source_.get(indices + begin_); }
  void prefetch(const torch::Tensor& indices) override { source_.prefetch(indices + begin_); }

 private:
  BatchSource& source_;
  int64_t begin_, end_;
};

// Drops every parameter's gradient (PyTorch's zero_grad(set_to_none=True)): backward then stores
// each fresh gradient instead of adding it to zeros, two operations fewer per parameter and step.
void drop_gradients(torch::optim::Optimizer& optimizer);

// Data-parallel: sums the parameters' gradients over the ranks, in place (flat buckets, one
// collective per bucket). Each rank's backward was of its share of the global batch's mean loss,
// so the sum is the gradient of the whole batch's mean.
void all_reduce_gradients(Collectives& group, const std::vector<torch::Tensor>& parameters);

// The learning rate at `step` of `total_steps` (warm-up then schedule), as a fraction of the peak.
double lr_factor(const TrainSettings& settings, int64_t step, int64_t total_steps, int64_t steps_per_epoch);

// Cross-entropy averaged over the batch, with label smoothing.
torch::Tensor cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets, double label_smoothing);
// The same against a batch: its soft targets when Mixup/CutMix made some, else its labels.
torch::Tensor cross_entropy(const torch::Tensor& logits, const Batch& batch, double label_smoothing);

struct TrainOptions {
  std::string label;  // shown in progress and errors, e.g. "codebook"
  uint64_t seed = 0;
  torch::Device device = torch::kCPU;
  // Called after each epoch; an error stops training.
  std::function<absl::Status(int64_t epoch)> on_epoch_end;
  // The modules whose whole state (parameters and buffers, e.g. EMA statistics) is what this
  // training changes: saved in checkpoints, snapshotted for keep_best.
  std::vector<std::shared_ptr<torch::nn::Module>> modules;
  // Written atomically after every epoch (modules, optimiser, epoch, best state); empty = none.
  std::filesystem::path checkpoint;
  bool resume = false;  // continue from `checkpoint` when it exists
  // Validation score after every epoch (higher is better), when settings.keep_best or
  // settings.validate_each_epoch is set.
  std::function<absl::StatusOr<double>()> validate;
  int64_t num_classes = 0;  // the width of Mixup/CutMix soft targets
};

struct TrainSummary {
  int64_t steps = 0;
  double last_epoch_loss = 0.0;  // mean loss of the final epoch
  double seconds = 0.0;
  double data_seconds = 0.0;       // of `seconds`, waiting for batches (input-bound training shows here)
  double sync_seconds = 0.0;       // of `seconds`, in the trainer's collectives (data-parallel): gradients,
                                   // losses, batch norm statistics, the replica check; waiting for peers included
  double validation_seconds = 0.0; // of `seconds`, validating after epochs
  std::vector<double> epoch_losses;  // mean training loss per epoch (the curves of the run report)
  std::vector<double> validation;  // per epoch, when validated
  int64_t best_epoch = -1;         // 0-based; -1 when not validated
  double best_score = 0.0;
  int64_t resumed_epochs = 0;      // epochs taken from a checkpoint instead of trained
  int64_t replica_checks = 0;      // data-parallel: epochs after which the ranks' states were compared equal
};

// Minimises loss_fn over `data` for settings.epochs epochs. loss_fn receives a batch already on
// options.device and returns a scalar loss.
absl::StatusOr<TrainSummary> train(const TrainSettings& settings, std::vector<torch::Tensor> parameters,
                                   BatchSource& data, const std::function<torch::Tensor(const Batch&)>& loss_fn,
                                   const TrainOptions& options);

// Runs fn over `data` in order, in batches, without gradients, and concatenates the outputs.
absl::StatusOr<torch::Tensor> map_batches(BatchSource& data, int64_t batch_size, torch::Device device,
                                          const std::function<torch::Tensor(const Batch&)>& fn,
                                          const std::string& label);

// The same, data-parallel (collective): each rank maps its contiguous share of `data` and the
// shares are gathered, so every rank returns the whole output. fn sees only this rank's
// batches. With fewer rows than ranks every rank maps them all.
absl::StatusOr<torch::Tensor> map_batches_sharded(BatchSource& data, int64_t batch_size, torch::Device device,
                                                  const std::function<torch::Tensor(const Batch&)>& fn,
                                                  const std::string& label);

}  // namespace protoquant
