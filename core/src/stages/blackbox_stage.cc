// Stage 0: the black-box classifier (backbone f and its linear head g), trained on the images or
// brought by the user (stages.blackbox.weights). Frozen from here on.
#include "protoquant/atomic_file.h"
#include "protoquant/batch_norm.h"
#include "protoquant/checkpoint.h"
#include "protoquant/digest.h"
#include "protoquant/status.h"
#include "stages/run_state.h"
#include "stages/stages.h"

namespace protoquant {
namespace fs = std::filesystem;

namespace {

class BlackboxStage : public Stage {
 public:
  std::string name() const override { return "blackbox"; }
  bool trains() const override { return true; }

  absl::StatusOr<nlohmann::json> key_inputs(const RunState& run) const override {
    const Params& stage = run.spec.stages.at("blackbox");
    nlohmann::json inputs = {{"backbone", run.component_identity(run.spec.backbone)}};
    if (const std::string weights = stage.get_string("weights"); !weights.empty()) {
      // Brought by the user: the file's content is the input, not a training recipe.
      PQ_ASSIGN_OR_RETURN(const std::string digest, sha256_file(weights));
      inputs["weights_sha256"] = digest;
    } else {
      inputs["settings"] = stage.to_json();
      // Only when not fp32, so that fp32 keys stay what they were before the setting existed.
      if (run.backbone_precision != Precision::kFp32) inputs["precision"] = precision_name(run.backbone_precision);
      inputs["dataset"] = run.dataset_identity();
      inputs["splits"] = run.splits();
    }
    return inputs;
  }

  std::map<std::string, fs::path> outputs(const RunState& run) const override {
    return {{"backbone.pt", saved(run)}};
  }

  absl::Status build(RunState& run) override {
    run.reseed(0);
    PQ_ASSIGN_OR_RETURN(run.model.backbone,
                        run.registry.backbones.build(run.spec.backbone.type, run.spec.backbone.params, run.context));
    run.model.backbone->to(run.context.device);
    run.context.feature_channels = run.model.backbone->channels();
    return absl::OkStatus();
  }

  absl::StatusOr<nlohmann::json> compute(RunState& run) override {
    auto backbone = run.model.backbone;
    const Params& stage = run.spec.stages.at("blackbox");
    const TrainSettings settings = TrainSettings::from(stage);
    const std::string weights = stage.get_string("weights");
    nlohmann::json record = {{"weights", weights}};
    if (!weights.empty()) {
      // A black box brought by the user (or an earlier run): loaded, not trained.
      PQ_RETURN_IF_ERROR(load_module(*backbone, weights));
      backbone->to(run.context.device);
    } else {
      DatasetSource source(*run.dataset, run.train_split);
      // Logits at the run's backbone precision, widened: the loss and the accuracy are fp32.
      const auto logits_of = [&](const torch::Tensor& images) {
        AutocastScope autocast(run.backbone_precision, run.context.device);
        return backbone->forward(images).to(torch::kFloat32);
      };
      TrainOptions options = run.train_options("blackbox", {backbone});
      options.validate = [&]() -> absl::StatusOr<double> {
        DatasetSource validation(*run.dataset, run.validation_split, /*augment=*/false);
        return eval_accuracy(*backbone, validation, settings.eval_batch_size, run.context.device,
                             [&](const Batch& b) { return logits_of(b.images); }, "validate blackbox");
      };
      PQ_RETURN_IF_ERROR(synchronise_batch_norm(*backbone, stage.get_bool("sync_batchnorm")).status());
      backbone->train();
      PQ_ASSIGN_OR_RETURN(auto summary, train(settings, backbone->parameters(), source,
                                              [&](const Batch& batch) {
                                                return cross_entropy(logits_of(batch.images), batch,
                                                                     settings.label_smoothing);
                                              },
                                              options));
      PQ_RETURN_IF_ERROR(synchronise_batch_norm(*backbone, false).status());
      record.update(training_record(summary));
    }
    freeze(*backbone);
    PQ_RETURN_IF_ERROR(save_if_writer(*backbone, saved(run)));
    return record;
  }

  absl::Status load(RunState& run, const nlohmann::json&) override {
    PQ_RETURN_IF_ERROR(load_module(*run.model.backbone, saved(run)));
    run.model.backbone->to(run.context.device);
    return absl::OkStatus();
  }

  absl::Status finish(RunState& run, const nlohmann::json&) override {
    freeze(*run.model.backbone);
    return absl::OkStatus();
  }

 private:
  static fs::path saved(const RunState& run) { return run.run_dir / "model" / "backbone.pt"; }
};

}  // namespace

std::unique_ptr<Stage> blackbox_stage() { return std::make_unique<BlackboxStage>(); }

}  // namespace protoquant
