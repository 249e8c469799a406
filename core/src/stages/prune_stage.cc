// Stage 2 (when stages.prune.target > 0): remove the least-used codes in `steps` steps down to
// `target` per codebook, re-measuring usage on the validation split and briefly re-training
// between steps.
#include <fmt/format.h>

#include "protoquant/atomic_file.h"
#include "protoquant/checkpoint.h"
#include "protoquant/codebook_usage.h"
#include "protoquant/process_group.h"
#include "protoquant/status.h"
#include "stages/quantizer_training.h"
#include "stages/stages.h"

namespace protoquant {
namespace fs = std::filesystem;

namespace {

class PruneStage : public Stage {
 public:
  std::string name() const override { return "prune"; }
  bool trains() const override { return true; }

  absl::StatusOr<nlohmann::json> key_inputs(const RunState& run) const override {
    return nlohmann::json{{"codebook", run.keys.at("codebook").key},
                          {"features", run.keys.at("features").key},
                          {"settings", run.spec.stages.at("prune").to_json()},
                          {"splits", run.splits()}};
  }

  std::map<std::string, fs::path> outputs(const RunState& run) const override {
    return {{"quantizer.pt", saved(run)}};
  }

  absl::Status build(RunState& run) override {
    initial_ = run.model.quantizer->num_codes();
    return absl::OkStatus();
  }

  absl::Status read_inputs(RunState& run) override { return run.read_training_features(); }

  absl::StatusOr<nlohmann::json> compute(RunState& run) override {
    auto quantizer = run.model.quantizer;
    const Params& stage = run.spec.stages.at("prune");
    const int64_t target = stage.get_int("target");
    if (target >= initial_) {
      if (is_writer()) fmt::print(stderr, "[prune] target {} >= K = {}: nothing to prune\n", target, initial_);
      PQ_RETURN_IF_ERROR(save_if_writer(*quantizer, saved(run)));
      nlohmann::json record = {{"codes", initial_}, {"from", initial_}, {"steps", nlohmann::json::array()}};
      PQ_ASSIGN_OR_RETURN(record["usage"], measure_usage(run));
      return record;
    }
    const TrainSettings settings = TrainSettings::from(stage);
    const int64_t steps = stage.get_int("steps");
    PQ_ASSIGN_OR_RETURN(TensorSource* train_set, run.train_features());
    PQ_ASSIGN_OR_RETURN(TensorSource* validation, run.validation_features());
    nlohmann::json history = nlohmann::json::array();
    for (int64_t s = 1; s <= steps; ++s) {
      // Usage on the validation split decides which codes go.
      quantizer->reset_usage();
      PQ_ASSIGN_OR_RETURN(const double before, run.quantized_accuracy(*validation));
      if (validation->size() >= collectives().world_size()) quantizer->all_reduce_usage();  // each rank counted its share
      const UsageStats usage = quantizer->usage();
      const auto counts = torch::tensor(usage.counts, torch::kInt64).view({usage.codebooks, -1});
      const int64_t size = initial_ - (initial_ - target) * s / steps;
      PQ_RETURN_IF_ERROR(quantizer->keep_codes(most_used_codes(counts, size)));
      for (auto& p : quantizer->parameters()) p.set_requires_grad(true);
      quantizer->train();
      std::vector<torch::Tensor> trainable;
      if (quantizer->learns_by_gradient()) trainable = quantizer->parameters();
      TrainOptions options = run.train_options("prune", {quantizer});
      options.label = fmt::format("prune step {}/{}", s, steps);
      options.checkpoint.clear();  // a pruning step is short: an interrupted stage 2 reruns whole
      options.seed = run.context.seed + static_cast<uint64_t>(s);
      PQ_ASSIGN_OR_RETURN(auto summary, train(settings, trainable, *train_set, codebook_objective(run, settings), options));
      PQ_ASSIGN_OR_RETURN(const double after, run.quantized_accuracy(*validation));
      if (is_writer()) {
        fmt::print(stderr, "[prune] step {}/{}: K {} -> {}, g(Zq) validation accuracy {:.4f} -> {:.4f}\n", s, steps,
                   s == 1 ? initial_ : history.back()["codes"].get<int64_t>(), size, before, after);
      }
      history.push_back({{"codes", size}, {"accuracy_before", before}, {"accuracy_after", after},
                         {"loss", summary.last_epoch_loss}});
    }
    freeze(*quantizer);
    PQ_RETURN_IF_ERROR(save_if_writer(*quantizer, saved(run)));
    nlohmann::json record = {{"codes", target}, {"from", initial_}, {"steps", history}};
    PQ_ASSIGN_OR_RETURN(record["usage"], measure_usage(run));
    return record;
  }

  absl::Status load(RunState& run, const nlohmann::json& record) override {
    Quantizer& quantizer = *run.model.quantizer;
    // The filed codebook is smaller than the one built: shrink it to the kept size first.
    const int64_t codebooks = quantizer.usage().codebooks;
    const int64_t kept = record["codes"].get<int64_t>();
    if (kept < initial_) PQ_RETURN_IF_ERROR(quantizer.keep_codes(torch::arange(kept, torch::kInt64).repeat({codebooks, 1})));
    return load_module(quantizer, saved(run));
  }

  absl::Status finish(RunState& run, const nlohmann::json& record) override {
    freeze(*run.model.quantizer);
    report_usage(run, record);
    return absl::OkStatus();
  }

 private:
  static fs::path saved(const RunState& run) { return run.run_dir / "model" / "quantizer_pruned.pt"; }
  int64_t initial_ = 0;  // codes per codebook before pruning
};

}  // namespace

std::unique_ptr<Stage> prune_stage() { return std::make_unique<PruneStage>(); }

}  // namespace protoquant
