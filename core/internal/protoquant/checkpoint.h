// Training checkpoints: everything a stage needs to continue after a crash exactly as if it had
// not stopped (module state, optimiser state, epoch counters, validation history and the best
// epoch's state). Written atomically, so a checkpoint on disk is always a complete one, and
// followed by the SHA-256 of its archive, so a corrupted or truncated one is never trusted.
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include <absl/status/status.h>
#include <absl/status/statusor.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

namespace protoquant {

// A module's parameters and buffers, in registration order (detached clones).
using ModuleState = std::vector<torch::Tensor>;
ModuleState snapshot_state(const torch::nn::Module& module);
void restore_state(torch::nn::Module& module, const ModuleState& state);

struct TrainingProgress {
  int64_t epochs_done = 0;
  int64_t step = 0;
  double last_epoch_loss = 0.0;
  std::vector<double> epoch_losses;  // one per epoch done
  std::vector<double> validation;
  int64_t best_epoch = -1;
  double best_score = 0.0;
  std::vector<ModuleState> best_state;  // one per module, when keep_best has a best epoch
};

absl::Status save_checkpoint(const std::filesystem::path& path, const TrainingProgress& progress,
                             const std::vector<std::shared_ptr<torch::nn::Module>>& modules,
                             torch::optim::Optimizer* optimizer);
// The archive's bytes once the checksum matches; DataLoss naming the file otherwise.
absl::StatusOr<std::string> read_verified_checkpoint(const std::filesystem::path& path);
// True when `path` holds a checkpoint whose checksum matches. One that does not (corrupted,
// truncated, or from before checksums) is renamed to `<path>.bad` with a one-line warning, so
// the stage starts again instead of resuming from it or failing forever.
bool set_aside_bad_checkpoint(const std::filesystem::path& path);
// Restores modules and optimiser in place; the modules must have the shapes they were saved with.
absl::Status load_checkpoint(const std::filesystem::path& path, TrainingProgress& progress,
                             const std::vector<std::shared_ptr<torch::nn::Module>>& modules,
                             torch::optim::Optimizer* optimizer);

}  // namespace protoquant
