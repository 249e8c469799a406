// Stage 4 (when stages.limit.k > 0): a sparse head, as the authors' limit_and_prune_prototypes
// makes it. Keep each class's k strongest prototypes (limit-k), remove the prototypes no class
// uses from the head (and from the codebook, when its codes are the head's prototypes one to
// one), then fine-tune the kept weights (and, with train_prototypes, the kept prototypes) with
// the mask held fixed (Head::hold_class_weights). The metrics, the report and the export see this head.
//
// Removing the unused prototypes leaves every prediction as it was (they stay in the softmax's
// denominator unless keep_removed_in_softmax is off), so the record's accuracy_limited and
// accuracy_pruned are equal; the fine-tuning then moves the kept weights only.
#include <fmt/format.h>

#include "protoquant/atomic_file.h"
#include "protoquant/edit.h"
#include "protoquant/model_size.h"
#include "protoquant/process_group.h"
#include "protoquant/status.h"
#include "stages/run_state.h"
#include "stages/stages.h"

namespace protoquant {
namespace fs = std::filesystem;

namespace {

std::vector<int64_t> to_vector(const torch::Tensor& indices) {
  const auto cpu = indices.to(torch::kCPU, torch::kInt64).contiguous();
  return {cpu.data_ptr<int64_t>(), cpu.data_ptr<int64_t>() + cpu.numel()};
}

class LimitStage : public Stage {
 public:
  std::string name() const override { return "limit"; }
  bool trains() const override { return true; }

  absl::StatusOr<nlohmann::json> key_inputs(const RunState& run) const override {
    return nlohmann::json{{"head", run.keys.at("head").key},
                          {"features", run.keys.at("features").key},
                          {"settings", run.spec.stages.at("limit").to_json()},
                          {"splits", run.splits()}};
  }

  std::map<std::string, fs::path> outputs(const RunState& run) const override {
    std::map<std::string, fs::path> files = {{"head.pt", head_file(run)}};
    if (prunes_codebook_) files["quantizer.pt"] = quantizer_file(run);
    return files;
  }

  absl::Status build(RunState& run) override {
    prototypes_ = run.model.head->class_weights().size(1);
    const auto& quantizer = run.model.quantizer;
    prunes_codebook_ = run.spec.stages.at("limit").get_bool("prune_unused") && quantizer && quantizer->subspaces() == 1 &&
                       quantizer->usage().codebooks == 1 && quantizer->num_codes() == prototypes_;
    return absl::OkStatus();
  }

  absl::Status read_inputs(RunState& run) override { return run.read_training_features(); }

  absl::StatusOr<nlohmann::json> compute(RunState& run) override {
    const Params& stage = run.spec.stages.at("limit");
    const int64_t k = stage.get_int("k");
    Head& head = *run.model.head;
    PQ_ASSIGN_OR_RETURN(TensorSource* validation, run.validation_features());
    nlohmann::json record = {{"k", k}, {"prototypes_before", prototypes_}};
    PQ_ASSIGN_OR_RETURN(record["accuracy_before"], run.head_accuracy(*validation));

    torch::Tensor limited;
    {
      torch::NoGradGuard no_grad;
      limited = limit_k_weights(head.class_weights().detach().clone(), k);
      PQ_RETURN_IF_ERROR(head.set_class_weights(limited));
    }
    PQ_ASSIGN_OR_RETURN(record["accuracy_limited"], run.head_accuracy(*validation));
    torch::Tensor kept = torch::arange(prototypes_, torch::kInt64);
    if (stage.get_bool("prune_unused")) {
      kept = limited.gt(0).any(0).nonzero().squeeze(1).to(torch::kCPU, torch::kInt64);
      if (kept.numel() == 0) return absl::FailedPreconditionError("stages.limit: no class has a positive weight left");
      if (absl::Status removed = head.keep_prototypes(kept, stage.get_bool("keep_removed_in_softmax")); !removed.ok()) {
        return absl::FailedPreconditionError(fmt::format(
            "stages.limit.prune_unused: the '{}' head cannot remove prototypes ({}); set it to false", run.spec.head.type,
            std::string(removed.message())));
      }
      if (prunes_codebook_) PQ_RETURN_IF_ERROR(run.model.quantizer->keep_codes(kept.unsqueeze(0)));
      PQ_ASSIGN_OR_RETURN(record["accuracy_pruned"], run.head_accuracy(*validation));
    }
    record["kept_prototypes"] = to_vector(kept);
    const int64_t kept_count = kept.numel();

    // Fine-tuning: only the kept weights move.
    PQ_RETURN_IF_ERROR(head.hold_class_weights(head.class_weights().detach().gt(0)));
    const bool train_prototypes = stage.get_bool("train_prototypes");
    std::vector<torch::Tensor> trainable;
    for (auto& parameter : head.parameters()) {
      const bool is_prototype = parameter.is_same(head.prototypes());
      parameter.set_requires_grad(!is_prototype || train_prototypes);
      if (parameter.requires_grad()) trainable.push_back(parameter);
    }
    PQ_ASSIGN_OR_RETURN(TensorSource* train_set, run.train_features());
    const TrainSettings settings = TrainSettings::from(stage);
    TrainOptions options = run.train_options("limit", {run.model.head});
    options.validate = [&] { return run.head_accuracy(*validation); };
    head.train();
    TensorSource features = head_training_set(head, settings, *train_set);
    PQ_ASSIGN_OR_RETURN(auto summary, train(settings, trainable, features, head_objective(head, settings), options));
    head.eval();
    record.update(training_record(summary));
    const ModelSize size = model_size(head.class_weights());
    record["local_size"] = size.local_size;
    record["prototypes"] = head.class_weights().size(1);
    if (is_writer()) {
      fmt::print(stderr, "[limit] k = {}: {} of {} prototypes kept, validation accuracy {:.4f} -> {:.4f} (limited) -> {:.4f}\n", k,
                 kept_count, prototypes_, record["accuracy_before"].get<double>(), record["accuracy_limited"].get<double>(),
                 summary.validation.empty() ? record["accuracy_limited"].get<double>() : summary.validation.back());
    }
    PQ_RETURN_IF_ERROR(save_if_writer(head, head_file(run)));
    if (prunes_codebook_) PQ_RETURN_IF_ERROR(save_if_writer(*run.model.quantizer, quantizer_file(run)));
    return record;
  }

  // The filed head has only the kept prototypes: shrink the built one the same way first.
  absl::Status load(RunState& run, const nlohmann::json& record) override {
    const Params& stage = run.spec.stages.at("limit");
    const torch::Tensor kept = torch::tensor(record["kept_prototypes"].get<std::vector<int64_t>>(), torch::kInt64);
    if (kept.numel() < prototypes_) {
      PQ_RETURN_IF_ERROR(run.model.head->keep_prototypes(kept, stage.get_bool("keep_removed_in_softmax")));
      if (prunes_codebook_) {
        PQ_RETURN_IF_ERROR(run.model.quantizer->keep_codes(kept.unsqueeze(0)));
        PQ_RETURN_IF_ERROR(load_module(*run.model.quantizer, quantizer_file(run)));
      }
    }
    return load_module(*run.model.head, head_file(run));
  }

  absl::Status finish(RunState& run, const nlohmann::json&) override {
    freeze(*run.model.head);
    return absl::OkStatus();
  }

 private:
  static fs::path head_file(const RunState& run) { return run.run_dir / "model" / "head_limited.pt"; }
  static fs::path quantizer_file(const RunState& run) { return run.run_dir / "model" / "quantizer_limited.pt"; }
  int64_t prototypes_ = 0;  // the head's, before the stage
  // The codebook's codes are the head's prototypes one to one (one codebook, no sub-spaces):
  // the unused ones go from both.
  bool prunes_codebook_ = false;
};

}  // namespace

std::unique_ptr<Stage> limit_stage() { return std::make_unique<LimitStage>(); }

}  // namespace protoquant
