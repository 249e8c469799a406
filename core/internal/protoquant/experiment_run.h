// One experiment in its run folder. Its stages
//   dataset -> blackbox (0) -> features -> codebook (1) -> prune (2, when prune.target > 0)
//   -> head (3) -> one stage per metric instance (5)
// are content-addressed: each stage's key is a SHA-256 of its inputs (its manifest sections, the
// keys of the stages it reads, the dataset's identity and the identity of the libraries its
// components come from; see stage_key.h), and its outputs are filed under that key in the
// artifact store (artifact_store.h). A stage whose key is filed is reused, whatever run filed it;
// the others are computed, a stage that was interrupted continuing from its last checkpoint. So
// resuming a killed run, a sweep sharing its upstream stages, and a metric added to a finished
// run are one mechanism. Frozen-backbone features are computed only when a stage that reads them
// is computed, and filed in the store when experiment.store_features is set.
//
// `protoquant edit` opens a finished run (RunMode::kOpen): every stage is loaded from the run
// folder and nothing is trained. evaluate() writes model/protoquant.pt (export_model()), the
// whole model for Python; each edit writes one beside its head in edits/<name>/.
//
// Run folder layout:
//   manifest.toml           the resolved manifest (every default, absolute paths)
//   stages/<stage>.json     each stage's record: its key, whether it was reused, what it reported
//   model/*.pt              backbone, quantizer (pruned: quantizer_pruned.pt), head: hard links
//                           to (or copies of) the store's files
//   model/protoquant.pt     the whole model for Python: torch.load gives a dict of tensors
//   results.json            written last, atomically
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>

#include "protoquant/artifact_store.h"
#include "protoquant/eval_dump.h"
#include "protoquant/build_context.h"
#include "protoquant/experiment_spec.h"
#include "protoquant/model.h"
#include "protoquant/registry.h"
#include "protoquant/stage_key.h"
#include "protoquant/trainer.h"

namespace protoquant {

enum class RunMode {
  kRun,   // reuse every stage filed in the store, compute the rest
  kOpen,  // a finished run: every stage is loaded from the run folder; nothing is trained
};

// Datasets already built in this process, by their manifest table: the members of a sweep that
// read the same data share one (decoding Fashion-MNIST's files again per member would cost more
// than reusing a finished member's stages).
using DatasetCache = std::map<std::string, std::shared_ptr<Dataset>>;

struct RunSettings {
  std::filesystem::path store;  // the artifact store; empty: experiment.store, else beside the run folder
  std::string force;            // recompute this stage and every stage after it (empty: none)
  std::shared_ptr<DatasetCache> datasets;  // optional
  // "stage/key" of the stages --force recomputed in this command (shared by a sweep's members).
  std::shared_ptr<std::set<std::string>> recomputed;
  // `protoquant evaluate --dump`: every metric is computed (filed ones too) and records its inputs here.
  std::shared_ptr<EvalDump> dump;
};

// One line of a run's plan: a stage, its key, and whether the store already holds it.
struct StagePlan {
  std::string stage;
  std::string key;
  bool reused = false;
};

class ExperimentRun {
 public:
  ExperimentRun(const ExperimentSpec& spec, Registry& registry, std::filesystem::path run_dir, RunMode mode,
                RunSettings settings = {});

  // The stages this run would reuse or compute, without training anything (builds the dataset,
  // for its identity).
  absl::StatusOr<std::vector<StagePlan>> plan();
  // Stages up to and including the head (reused, computed, or loaded from the run folder).
  absl::Status train_stages();
  // The metrics (each a stage of its own), model size and the Python export.
  absl::Status evaluate();

  Model& model() { return model_; }
  Dataset& dataset() { return *dataset_; }
  const ExperimentSpec& spec() const { return spec_; }
  const std::filesystem::path& run_dir() const { return run_dir_; }
  const ArtifactStore& store() const { return store_; }
  // The evaluation and training splits' features (computed, or read from the store, on first use).
  absl::StatusOr<TensorSource*> eval_features();
  absl::StatusOr<TensorSource*> train_features();
  // Accuracy of g on quantized maps / of the head, over a split's features, in eval mode.
  absl::StatusOr<double> quantized_accuracy(TensorSource& features);
  absl::StatusOr<double> head_accuracy(TensorSource& features);
  torch::Device device() const { return context_.device; }
  nlohmann::json& results() { return results_; }
  // The run report's figures (report.h), filed under the "report" stage's key like any stage:
  // reused when filed, else `draw`n and filed. Drawn without filing for an opened run, or when
  // [report] is off.
  absl::StatusOr<nlohmann::json> report_figures(const std::function<absl::StatusOr<nlohmann::json>()>& draw);

 private:
  // What every stage shares: reuse the filed artifact (placing its files at `files`' run-folder
  // paths), or compute it under the store's lock and file it. `compute` returns the record.
  struct Outcome {
    nlohmann::json record;
    bool reused = false;
  };
  absl::StatusOr<Outcome> run_stage(const std::string& stage, const std::map<std::string, std::filesystem::path>& files,
                                    const std::function<absl::StatusOr<nlohmann::json>()>& compute,
                                    const std::function<absl::Status()>& prepare = nullptr);
  bool forced(const std::string& stage) const;
  bool has_quantizer() const { return !spec_.quantizer.type.empty(); }

  absl::Status start();
  absl::Status prepare_folder();
  absl::Status clear_folder();  // prepare_folder's writes (rank 0's)
  absl::Status load_dataset();
  absl::Status compute_keys();
  absl::Status blackbox();
  absl::Status codebook();
  absl::Status prune();
  absl::Status head();
  absl::Status read_training_features();  // train, validation and eval features, before a stage's clock
  absl::StatusOr<TensorSource*> validation_features();
  absl::StatusOr<std::unique_ptr<TensorSource>> extract(const std::string& split);
  // The values of the metrics spec_.metrics[i] for i in `which`, by instance, from one pass.
  absl::StatusOr<std::map<std::string, nlohmann::json>> compute_metrics(const std::vector<size_t>& which);

  TrainOptions train_options(const std::string& stage, std::vector<std::shared_ptr<torch::nn::Module>> modules);
  absl::StatusOr<nlohmann::json> measure_usage();
  void report_usage(const nlohmann::json& record);
  std::function<torch::Tensor(const Batch&)> codebook_objective(const TrainSettings& settings);
  void reseed(int stage) const;
  absl::Status build_quantizer();
  absl::Status build_head();
  nlohmann::json component_identity(const ComponentSpec& component) const;

  const ExperimentSpec& spec_;
  Registry& registry_;
  std::filesystem::path run_dir_;
  RunMode mode_;
  RunSettings settings_;
  ArtifactStore store_;
  bool started_ = false;
  BuildContext context_;
  std::string train_split_, eval_split_, validation_split_;
  std::shared_ptr<Dataset> dataset_;
  std::map<std::string, StageKey> keys_;           // by stage, in stage order: stage_order_
  std::vector<std::string> stage_order_;
  std::vector<std::string> metric_instances_;      // one name per spec_.metrics entry

  Model model_;
  std::unique_ptr<TensorSource> train_features_, eval_features_, separate_validation_features_;
  nlohmann::json results_;
};

}  // namespace protoquant
