// The training machinery every stage shares: optimiser (Adam, AdamW, SGD), linear warm-up +
// cosine schedule, label-smoothed cross-entropy, seeded shuffling and progress reporting.
// A stage supplies its trainable parameters, a BatchSource and a loss function; the trainer owns
// the loop. Device-agnostic: batches move to the stage's device, so the same loop runs on CUDA
// and can later be wrapped for data-parallel training (c10d) without touching the stages.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <torch/types.h>

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

 private:
  torch::Tensor inputs_, labels_;
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

// The learning rate at `step` of `total_steps` (warm-up then schedule), as a fraction of the peak.
double lr_factor(const TrainSettings& settings, int64_t step, int64_t total_steps, int64_t steps_per_epoch);

// Cross-entropy averaged over the batch, with label smoothing.
torch::Tensor cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets, double label_smoothing);

struct TrainOptions {
  std::string label;  // shown in progress and errors, e.g. "codebook"
  uint64_t seed = 0;
  torch::Device device = torch::kCPU;
  // Called after each epoch (validation, checkpoints); an error stops training.
  std::function<absl::Status(int64_t epoch)> on_epoch_end;
};

struct TrainSummary {
  int64_t steps = 0;
  double last_epoch_loss = 0.0;  // mean loss of the final epoch
  double seconds = 0.0;
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

}  // namespace protoquant
