// Stage 1: the codebook (the quantizer), learned on the frozen backbone's features through the
// frozen original head g; its codewords are the prototypes.
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include "protoquant/atomic_file.h"
#include "protoquant/checkpoint.h"
#include "protoquant/process_group.h"
#include "protoquant/status.h"
#include "stages/quantizer_training.h"
#include "stages/stages.h"

namespace protoquant {
namespace fs = std::filesystem;

std::function<torch::Tensor(const Batch&)> codebook_objective(RunState& run, const TrainSettings& settings) {
  const Params& stage = run.spec.stages.at("codebook");
  const double task_weight = stage.get_float("task_weight");
  const double codebook_weight = stage.get_float("codebook_weight");
  return [=, backbone = run.model.backbone, quantizer = run.model.quantizer](const Batch& batch) {
    Quantized q = quantizer->quantize(batch.images);
    return task_weight * cross_entropy(backbone->classify(q.quantized), batch, settings.label_smoothing) +
           codebook_weight * q.loss;
  };
}

absl::StatusOr<nlohmann::json> measure_usage(RunState& run) {
  Quantizer& quantizer = *run.model.quantizer;
  quantizer.reset_usage();
  PQ_ASSIGN_OR_RETURN(TensorSource* eval, run.eval_features());
  PQ_ASSIGN_OR_RETURN(const double accuracy, run.quantized_accuracy(*eval));
  if (eval->size() >= collectives().world_size()) quantizer.all_reduce_usage();  // each rank counted its share
  const auto usage = quantizer.usage();
  nlohmann::json measured = usage.to_json(false);
  measured["quantized_blackbox_accuracy"] = accuracy;
  measured["counts"] = usage.counts;
  if (is_writer()) {
    fmt::print(stderr, "[codebook] {} of {} codes used on {}, perplexity {:.1f}, g(Zq) accuracy {:.4f}\n", usage.used,
               usage.codebooks * usage.codes_per_codebook, run.eval_split, usage.mean_perplexity, accuracy);
  }
  return measured;
}

void report_usage(RunState& run, const nlohmann::json& record) {
  nlohmann::json usage = record.value("usage", nlohmann::json::object());
  run.results["codebook_counts"] = usage.value("counts", nlohmann::json::array());
  usage.erase("counts");
  run.results["metrics"]["codebook"] = usage;
}

namespace {

class CodebookStage : public Stage {
 public:
  std::string name() const override { return "codebook"; }
  bool trains() const override { return true; }

  absl::StatusOr<nlohmann::json> key_inputs(const RunState& run) const override {
    return nlohmann::json{{"features", run.keys.at("features").key},
                          {"quantizer", run.component_identity(run.spec.quantizer)},
                          {"settings", run.spec.stages.at("codebook").to_json()},
                          {"splits", run.splits()}};
  }

  std::map<std::string, fs::path> outputs(const RunState& run) const override {
    return {{"quantizer.pt", saved(run)}};
  }

  absl::Status build(RunState& run) override {
    run.reseed(1);
    PQ_ASSIGN_OR_RETURN(run.model.quantizer,
                        run.registry.quantizers.build(run.spec.quantizer.type, run.spec.quantizer.params, run.context));
    run.model.quantizer->to(run.context.device);
    return absl::OkStatus();
  }

  absl::Status read_inputs(RunState& run) override { return run.read_training_features(); }

  absl::StatusOr<nlohmann::json> compute(RunState& run) override {
    auto quantizer = run.model.quantizer;
    const TrainSettings settings = TrainSettings::from(run.spec.stages.at("codebook"));
    TrainOptions options = run.train_options("codebook", {quantizer});
    PQ_ASSIGN_OR_RETURN(TensorSource* train_set, run.train_features());
    PQ_ASSIGN_OR_RETURN(TensorSource* validation, run.validation_features());
    const auto init_start = Clock::now();
    // Decided by rank 0: the k-means init is collective, so every rank must take it or none.
    if (!rank0_decides(fs::exists(options.checkpoint))) {
      // Data-dependent inits (k-means) see a fixed sample of real feature vectors.
      auto generator = at::detail::createCPUGenerator(run.context.seed + 17);
      const auto& f = train_set->inputs();
      const int64_t images = std::min<int64_t>(f.size(0), std::max<int64_t>(1, 65536 / (f.size(2) * f.size(3))));
      const auto pick = torch::randperm(f.size(0), generator, torch::kInt64).slice(0, 0, images).to(f.device());
      const auto sample = f.index_select(0, pick).permute({0, 2, 3, 1}).reshape({-1, f.size(1)}).to(torch::kFloat32);
      PQ_RETURN_IF_ERROR(guard("initialising the codebook", [&] { return quantizer->initialize(sample); }));
    }
    const double init_seconds = seconds_since(init_start);
    options.validate = [&] { return run.quantized_accuracy(*validation); };
    quantizer->train();
    std::vector<torch::Tensor> trainable;
    if (quantizer->learns_by_gradient()) trainable = quantizer->parameters();
    PQ_ASSIGN_OR_RETURN(auto summary, train(settings, trainable, *train_set, codebook_objective(run, settings), options));
    freeze(*quantizer);
    PQ_RETURN_IF_ERROR(save_if_writer(*quantizer, saved(run)));
    nlohmann::json record = training_record(summary);
    record["init_seconds"] = init_seconds;
    const auto usage_start = Clock::now();
    PQ_ASSIGN_OR_RETURN(record["usage"], measure_usage(run));
    record["usage_seconds"] = seconds_since(usage_start);
    return record;
  }

  absl::Status load(RunState& run, const nlohmann::json&) override {
    return load_module(*run.model.quantizer, saved(run));
  }

  absl::Status finish(RunState& run, const nlohmann::json& record) override {
    freeze(*run.model.quantizer);
    report_usage(run, record);
    return absl::OkStatus();
  }

 private:
  static fs::path saved(const RunState& run) { return run.run_dir / "model" / "quantizer.pt"; }
};

}  // namespace

std::unique_ptr<Stage> codebook_stage() { return std::make_unique<CodebookStage>(); }

}  // namespace protoquant
