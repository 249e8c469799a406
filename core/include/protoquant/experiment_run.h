// One experiment in its run folder. It runs the stages
//   dataset -> blackbox (0) -> features -> codebook (1) -> prune (2) -> head (3)
// and, on request, evaluates (5). Every finished stage leaves its model file and a record
// (stages/<stage>.json) in the folder; with `resume`, a recorded stage is loaded instead of rerun
// and an interrupted one continues from its last per-epoch checkpoint. `protoquant edit` opens a
// finished run the same way (RunMode::kOpen), with every stage loaded. There is no export
// command: evaluate() writes model/protoquant.pt with export_model() (protoquant/model_export.h),
// and `protoquant edit` writes one beside each edit.
//
// Run folder layout:
//   manifest.toml           the resolved manifest (every default, absolute paths)
//   stages/<stage>.json     what each finished stage reported; stages/manifest.json guards resume
//   checkpoints/<stage>.pt  the last epoch of a stage in progress
//   model/*.pt              backbone, quantizer (pruned: quantizer_pruned.pt), head
//   model/protoquant.pt     the whole model for Python: torch.load gives a dict of tensors
//   results.json            written last, atomically
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>

#include "protoquant/build_context.h"
#include "protoquant/experiment_spec.h"
#include "protoquant/model.h"
#include "protoquant/registry.h"
#include "protoquant/trainer.h"

namespace protoquant {

enum class RunMode {
  kFresh,   // start over in the folder (earlier stage records and checkpoints are removed)
  kResume,  // load recorded stages, continue the interrupted one, train the rest
  kOpen,    // a finished run: every stage must be recorded; nothing is trained or removed
};

class ExperimentRun {
 public:
  ExperimentRun(const ExperimentSpec& spec, Registry& registry, std::filesystem::path run_dir, RunMode mode);

  // Stages up to and including the head (trained, or loaded where recorded).
  absl::Status train_stages();
  // Stage 5: accuracy of head and black box, then every metric of the manifest.
  absl::Status evaluate();

  Model& model() { return model_; }
  Dataset& dataset() { return *dataset_; }
  const ExperimentSpec& spec() const { return spec_; }
  const std::filesystem::path& run_dir() const { return run_dir_; }
  TensorSource& eval_features() { return *eval_features_; }
  // Accuracy of g on quantized maps / of the head, over a split's features, in eval mode.
  absl::StatusOr<double> quantized_accuracy(TensorSource& features);
  absl::StatusOr<double> head_accuracy(TensorSource& features);
  torch::Device device() const { return context_.device; }
  nlohmann::json& results() { return results_; }

 private:
  absl::Status prepare_folder();
  absl::Status load_dataset();
  absl::Status blackbox();
  absl::Status extract_features();
  absl::Status codebook();
  absl::Status prune();
  absl::Status head();

  // The record of a finished stage when resuming, else nullopt.
  std::optional<nlohmann::json> finished(const std::string& stage) const;
  absl::Status finish(const std::string& stage, double seconds, nlohmann::json record);
  TrainOptions train_options(const std::string& stage, std::vector<std::shared_ptr<torch::nn::Module>> modules);
  absl::Status measure_usage();
  std::function<torch::Tensor(const Batch&)> codebook_objective(const TrainSettings& settings);
  absl::Status not_recorded(const std::string& stage) const;
  void reseed(int stage) const;
  absl::Status build_head();

  const ExperimentSpec& spec_;
  Registry& registry_;
  std::filesystem::path run_dir_;
  RunMode mode_;
  BuildContext context_;
  std::string train_split_, eval_split_, validation_split_;
  std::shared_ptr<Dataset> dataset_;
  Model model_;
  std::unique_ptr<TensorSource> train_features_, eval_features_;
  TensorSource* validation_features_ = nullptr;
  std::unique_ptr<TensorSource> separate_validation_features_;
  nlohmann::json results_;
};

}  // namespace protoquant
