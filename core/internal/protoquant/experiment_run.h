// One experiment in its run folder. Its stages (core/src/stages/, one file each)
//   dataset -> blackbox (0) -> features -> codebook (1) -> prune (2, when prune.target > 0)
//   -> head (3) -> limit (4, when limit.k > 0) -> one stage per metric instance (5) -> report
// are content-addressed: each stage's key is a SHA-256 of its inputs (its manifest sections, the
// keys of the stages it reads, the dataset's identity and the identity of the libraries its
// components come from; see stage_key.h), and its outputs are filed under that key in the
// artifact store (artifact_store.h). A stage whose key is filed is reused, whatever run filed it;
// the others are computed, a stage that was interrupted continuing from its last checkpoint. So
// resuming a killed run, a sweep sharing its upstream stages, and a metric added to a finished
// run are one mechanism. Frozen-backbone features are computed only when a stage that reads them
// is computed, and filed in the store when experiment.store_features is set.
//
// `protoquant edit`, `evaluate`'s checks, `report` and `explain` open a finished run
// (RunMode::kOpen): every stage is built and loaded from the run folder through the same stage
// interface, and nothing is trained. evaluate() writes model/protoquant.pt (export_model()), the
// whole model for Python; each edit writes one beside its head in edits/<name>/.
//
// Run folder layout:
//   manifest.toml           the resolved manifest (every default, absolute paths)
//   stages/<stage>.json     each stage's record: its key, whether it was reused, what it reported
//   model/*.pt              backbone, quantizer (pruned: quantizer_pruned.pt), head (limited:
//                           head_limited.pt, quantizer_limited.pt): hard links
//                           to (or copies of) the store's files
//   model/protoquant.pt     the whole model for Python: torch.load gives a dict of tensors
//   results.json            written last, atomically
#pragma once

#include <filesystem>
#include <map>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>

#include "protoquant/evaluation_pass.h"
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
  bool trains = false;  // computing it trains something (`protoquant evaluate` refuses to)
};

struct RunState;     // what the stages share (core/src/stages/run_state.h)
class Stage;         // one stage (core/src/stages/stage.h)
class ReportStage;
class MetricPass;

// One run: the stages of its manifest, composed in order and run by the stage runner.
class ExperimentRun {
 public:
  ExperimentRun(const ExperimentSpec& spec, Registry& registry, std::filesystem::path run_dir, RunMode mode,
                RunSettings settings = {});
  ~ExperimentRun();

  // The stages this run would reuse or compute, without training anything (builds the dataset,
  // for its identity).
  absl::StatusOr<std::vector<StagePlan>> plan();
  // Stages up to and including the head (reused, computed, or loaded from the run folder).
  absl::Status train_stages();
  // The metrics (each a stage of its own), model size and the Python export.
  absl::Status evaluate();

  Model& model();
  Dataset& dataset();
  const ExperimentSpec& spec() const;
  const std::filesystem::path& run_dir() const;
  const ArtifactStore& store() const;
  // The evaluation and training splits' features (computed, or read from the store, on first use).
  absl::StatusOr<TensorSource*> eval_features();
  absl::StatusOr<TensorSource*> train_features();
  // Accuracy of g on quantized maps / of the head, over a split's features, in eval mode.
  absl::StatusOr<double> quantized_accuracy(TensorSource& features);
  absl::StatusOr<double> head_accuracy(TensorSource& features);
  torch::Device device() const;
  // The frozen backbone's features of images, as this run computes them (RunState::image_features()).
  absl::StatusOr<ImageFeatures> image_features();
  nlohmann::json& results();
  // The run report's figures (report.h), filed under the "report" stage's key like any stage:
  // reused when filed, else `draw`n and filed. Drawn without filing for an opened run, or when
  // [report] is off.
  absl::StatusOr<nlohmann::json> report_figures(const std::function<absl::StatusOr<nlohmann::json>()>& draw);

 private:
  absl::Status start();
  absl::Status compose();       // the manifest's stages, in order
  absl::Status compute_keys();  // every stage's key, in that order
  absl::Status load_dataset();
  absl::Status prepare_folder();
  absl::Status clear_folder();  // prepare_folder's writes (rank 0's)

  std::unique_ptr<RunState> run_;
  bool started_ = false;
  std::vector<std::unique_ptr<Stage>> stages_;  // in the run's order
  std::vector<Stage*> model_stages_;            // up to the head: train_stages()
  std::vector<Stage*> metric_stages_;           // evaluate()
  ReportStage* report_ = nullptr;               // when [report] is on
  std::shared_ptr<MetricPass> metric_pass_;
};

}  // namespace protoquant
