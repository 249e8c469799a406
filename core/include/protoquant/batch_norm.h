// Batch norm for backbones that the black-box stage trains: torch::nn::BatchNorm2d's options,
// parameters and buffers (the same names, so weights load unchanged) and its computation, that can
// also normalise with the batch
// moments of every rank of a data-parallel run, as PyTorch's SyncBatchNorm does.
//
// Synchronised (stages.blackbox.sync_batchnorm), in training, in a group of more than one: the
// per-channel sums and the rank's row count are all-reduced, then the centred sums of squares, so
// every rank normalises with the mean and variance of the whole global batch and the running
// estimates are the ones one process would keep. The all-reduce is differentiable (its backward
// all-reduces the gradient), so each rank's backward carries the other ranks' share of the
// moments' gradient: the step equals one process's step on the global batch. Otherwise (one
// process, eval mode, or not synchronised) it is torch::nn::BatchNorm2d.
#pragma once

#include <ostream>

#include <absl/status/statusor.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/options/batchnorm.h>

namespace protoquant {

class BatchNorm2dImpl : public torch::nn::Cloneable<BatchNorm2dImpl> {
 public:
  explicit BatchNorm2dImpl(int64_t num_features) : BatchNorm2dImpl(torch::nn::BatchNormOptions(num_features)) {}
  explicit BatchNorm2dImpl(const torch::nn::BatchNormOptions& options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& input);
  void pretty_print(std::ostream& stream) const override;
  void synchronise(bool on) { synchronised_ = on; }
  bool synchronised() const { return synchronised_; }
  // Folded into the convolution before it (fold_batch_norm): the identity in eval mode.
  bool folded() const { return folded_; }
  void mark_folded() { folded_ = true; }

  torch::nn::BatchNormOptions options;
  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  // This step's momentum, counting the batch (None: the cumulative average, as torch's).
  double next_momentum();
  torch::Tensor synchronised_forward(const torch::Tensor& input);
  bool synchronised_ = false;
  bool folded_ = false;
};
TORCH_MODULE(BatchNorm2d);

// Sets every protoquant::BatchNorm2d under `module` (itself included) to synchronise or not and
// returns how many there are. An error when `on` and `module` holds a batch norm that cannot
// synchronise (torch::nn's BatchNorm1d/2d/3d), naming it: it would silently see per-rank moments.
absl::StatusOr<int> synchronise_batch_norm(torch::nn::Module& module, bool on);

// For frozen inference: folds every protoquant::BatchNorm2d that directly follows a Conv2d among
// its parent's children (registration order, as conv-bn pairs are written: a Sequential's
// conv, bn, relu; a block's conv1, bn1) into that convolution's weight and bias (the conv gains
// a bias if it had none), and makes the batch norm the identity in eval mode. Returns how many
// were folded. Changes `module` for good: fold a copy that is never trained or saved, and check
// it against the original (the pairing is by order, not by the forward pass).
int fold_batch_norm(torch::nn::Module& module);
// How many fold_batch_norm would fold, changing nothing.
int foldable_batch_norms(torch::nn::Module& module);

}  // namespace protoquant
