// What a run's stages share: the manifest, the registry, the store, the dataset and its splits,
// the model the stages build one after the other, the stage keys, the features (extracted on
// first use) and the results. Owned by ExperimentRun; each stage reads and extends it.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "protoquant/artifact_store.h"
#include "protoquant/build_context.h"
#include "protoquant/experiment_run.h"
#include "protoquant/evaluation_pass.h"
#include "protoquant/experiment_spec.h"
#include "protoquant/model.h"
#include "protoquant/precision.h"
#include "protoquant/registry.h"
#include "protoquant/stage_key.h"
#include "protoquant/trainer.h"

namespace protoquant {

struct RunState {
  RunState(const ExperimentSpec& spec, Registry& registry, std::filesystem::path run_dir, RunMode mode,
           RunSettings settings);

  const ExperimentSpec& spec;
  Registry& registry;
  std::filesystem::path run_dir;
  RunMode mode;
  RunSettings settings;
  ArtifactStore store;
  BuildContext context;
  Precision backbone_precision = Precision::kFp32;  // experiment.backbone_precision (precision.h)
  std::string train_split, eval_split, validation_split;
  std::shared_ptr<Dataset> dataset;
  std::map<std::string, StageKey> keys;  // by stage, computed in the run's order
  std::vector<std::string> stage_order;  // every stage's name, in the run's order
  // One name per spec.metrics entry: the metric's type, "<type>_2", "<type>_3" for repeats, so
  // two instances of one metric never overwrite each other's values.
  std::vector<std::string> metric_instances;
  Model model;
  nlohmann::json results;

  bool opening() const { return mode == RunMode::kOpen; }
  bool has_quantizer() const { return !spec.quantizer.type.empty(); }
  // --force names this stage or one before it (and no sweep member recomputed it yet).
  bool forced(const std::string& stage) const;
  // Every stage builds its components from its own seed, so what it builds does not depend on
  // whether the stages before it were trained in this process or reused from the store.
  void reseed(int stage) const;
  // A component's type, parameters and the identity of the library it comes from (its key).
  nlohmann::json component_identity(const ComponentSpec& component) const;
  // The dataset's component and content identity, and the splits a stage reads: key inputs.
  nlohmann::json dataset_identity() const;
  nlohmann::json splits() const;
  // The key of the head the metrics, the report and the export see: the limit stage's when it
  // runs, else the head stage's.
  const std::string& final_head_key() const;
  // The trainer's options for a stage: its checkpoint belongs to the stage's key.
  TrainOptions train_options(const std::string& stage, std::vector<std::shared_ptr<torch::nn::Module>> modules);

  // The splits' features (features_stage.cc): extracted by the frozen backbone on first use, or
  // read from the store's feature cache.
  absl::StatusOr<TensorSource*> train_features();
  absl::StatusOr<TensorSource*> eval_features();
  absl::StatusOr<TensorSource*> validation_features();
  // The frozen backbone's features of images, as every pass after stage 0 computes them
  // (extraction, the metrics' image passes, explanations): at backbone_precision, through a copy
  // of the backbone whose batch norms are folded into their convolutions (fold_batch_norm) when
  // it has any and the copy's fp32 features equal the backbone's to 1e-4 of their largest
  // magnitude (else through the backbone itself, with a warning).
  absl::StatusOr<ImageFeatures> image_features();
  // Train, validation and evaluation features: a training stage's inputs.
  absl::Status read_training_features();

  // Accuracy of g on quantized maps / of the head, over a split's features, in eval mode.
  absl::StatusOr<double> quantized_accuracy(TensorSource& features);
  absl::StatusOr<double> head_accuracy(TensorSource& features);

 private:
  absl::StatusOr<std::unique_ptr<TensorSource>> extract(const std::string& split);
  absl::StatusOr<std::shared_ptr<Backbone>> folded_backbone();
  std::shared_ptr<Backbone> image_backbone_;  // what image_features() runs
  const Backbone* image_backbone_of_ = nullptr;  // the model.backbone it was made from
  std::unique_ptr<TensorSource> train_features_, eval_features_, separate_validation_features_;
};

// What the stages share.
using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}
// Frozen from here on: eval mode, no gradients.
void freeze(torch::nn::Module& module);
// Data-parallel: every rank holds the same module; rank 0 writes it.
absl::Status save_if_writer(torch::nn::Module& module, const std::filesystem::path& path);
// What a training stage reports (best_epoch is 1-based, 0 when not validated).
nlohmann::json training_record(const TrainSummary& summary);
// The head's training loss (stage 3, and the limit stage's fine-tuning): CE of its logits plus
// its regularization().
std::function<torch::Tensor(const Batch&)> head_objective(Head& head, const TrainSettings& settings);
// What the head trains on: 16-bit features as stored for a head that reads them, unless
// Mixup/CutMix mix the batch (they mix in the batch's dtype, so 16-bit features go in widened).
TensorSource head_training_set(const Head& head, const TrainSettings& settings, TensorSource& train_set);
// Top-1 accuracy of `logits_of` over `data`, with `module` in eval mode for the pass (its mode is
// restored after): the validation of every stage. Sharded over data-parallel ranks.
absl::StatusOr<double> eval_accuracy(torch::nn::Module& module, BatchSource& data, int64_t batch_size,
                                     torch::Device device, const std::function<torch::Tensor(const Batch&)>& logits_of,
                                     const std::string& label);

}  // namespace protoquant
