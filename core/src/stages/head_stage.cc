// Stage 3: the interpretable head, its prototypes starting from the codewords (or its own, for a
// head that learns them: free_prototypes, with no [quantizer]).
#include "protoquant/atomic_file.h"
#include "protoquant/checkpoint.h"
#include "protoquant/status.h"
#include "stages/run_state.h"
#include "stages/stages.h"

namespace protoquant {
namespace fs = std::filesystem;

namespace {

class HeadStage : public Stage {
 public:
  std::string name() const override { return "head"; }
  bool trains() const override { return true; }

  absl::StatusOr<nlohmann::json> key_inputs(const RunState& run) const override {
    // The last quantizer stage: pruning's when it runs, else the codebook's.
    std::string quantizer = "none";
    if (run.keys.count("prune")) quantizer = run.keys.at("prune").key;
    else if (run.keys.count("codebook")) quantizer = run.keys.at("codebook").key;
    return nlohmann::json{{"quantizer", quantizer},
                          {"features", run.keys.at("features").key},
                          {"head", run.component_identity(run.spec.head)},
                          {"settings", run.spec.stages.at("head").to_json()},
                          {"splits", run.splits()}};
  }

  std::map<std::string, fs::path> outputs(const RunState& run) const override { return {{"head.pt", saved(run)}}; }

  absl::Status build(RunState& run) override {
    run.reseed(3);
    if (run.model.quantizer) {
      run.context.prototypes = run.model.quantizer->codebook().detach().clone();
      run.context.prototype_groups = run.model.quantizer->subspaces();
    }
    PQ_ASSIGN_OR_RETURN(run.model.head, run.registry.heads.build(run.spec.head.type, run.spec.head.params, run.context));
    run.model.head->to(run.context.device);
    return absl::OkStatus();
  }

  absl::Status read_inputs(RunState& run) override { return run.read_training_features(); }

  absl::StatusOr<nlohmann::json> compute(RunState& run) override {
    auto head = run.model.head;
    const TrainSettings settings = TrainSettings::from(run.spec.stages.at("head"));
    PQ_ASSIGN_OR_RETURN(TensorSource* train_set, run.train_features());
    PQ_ASSIGN_OR_RETURN(TensorSource* validation, run.validation_features());
    head->train();
    std::vector<torch::Tensor> trainable;
    for (auto& p : head->parameters()) {
      if (p.requires_grad()) trainable.push_back(p);
    }
    TrainOptions options = run.train_options("head", {head});
    options.validate = [&] { return run.head_accuracy(*validation); };
    TensorSource features = head_training_set(*head, settings, *train_set);
    PQ_ASSIGN_OR_RETURN(auto summary, train(settings, trainable, features, head_objective(*head, settings), options));
    head->eval();
    PQ_RETURN_IF_ERROR(save_if_writer(*head, saved(run)));
    return training_record(summary);
  }

  absl::Status load(RunState& run, const nlohmann::json&) override { return load_module(*run.model.head, saved(run)); }

  absl::Status finish(RunState& run, const nlohmann::json&) override {
    run.model.head->eval();
    return absl::OkStatus();
  }

 private:
  static fs::path saved(const RunState& run) { return run.run_dir / "model" / "head.pt"; }
};

}  // namespace

std::unique_ptr<Stage> head_stage() { return std::make_unique<HeadStage>(); }

}  // namespace protoquant
