#include "stages/run_state.h"

#include <algorithm>

#include <fmt/format.h>

#include "protoquant/atomic_file.h"
#include "protoquant/batch_mixing.h"
#include "protoquant/checkpoint.h"
#include "protoquant/classification.h"
#include "protoquant/process_group.h"

namespace protoquant {
namespace fs = std::filesystem;

namespace {

// Where the store is: the one the CLI names, else experiment.store, else beside the run folder
// (runs/<name>-<time>/ and runs/store/), so every run under one output folder shares it.
fs::path store_root(const ExperimentSpec& spec, const fs::path& run_dir, const RunSettings& settings) {
  if (!settings.store.empty()) return settings.store;
  if (!spec.experiment.get_string("store").empty()) return spec.experiment.get_string("store");
  return fs::absolute(run_dir).parent_path() / "store";
}

}  // namespace

RunState::RunState(const ExperimentSpec& spec, Registry& registry, fs::path run_dir, RunMode mode, RunSettings settings)
    : spec(spec),
      registry(registry),
      run_dir(std::move(run_dir)),
      mode(mode),
      settings(std::move(settings)),
      store(store_root(spec, this->run_dir, this->settings)) {}

bool RunState::forced(const std::string& stage) const {
  if (settings.force.empty()) return false;
  // Recomputed once per command: a later sweep member sharing this stage's key reuses it.
  if (settings.recomputed && keys.count(stage) && settings.recomputed->count(stage + "/" + keys.at(stage).key)) {
    return false;
  }
  const auto at = [&](const std::string& name) {
    return std::find(stage_order.begin(), stage_order.end(), name) - stage_order.begin();
  };
  return at(stage) >= at(settings.force);
}

void RunState::reseed(int stage) const {
  torch::manual_seed(context.seed * 1000003ULL + 7919ULL * static_cast<uint64_t>(stage + 1));
}

nlohmann::json RunState::component_identity(const ComponentSpec& component) const {
  std::string library;
  for (const auto& entry : registry.entries(component.kind)) {
    if (entry.name == component.type) library = entry.library;
  }
  auto lib = library.empty() ? absl::StatusOr<nlohmann::json>(nlohmann::json()) : library_identity(library);
  return {{"type", component.type}, {"params", component.params.to_json()}, {"library", lib.ok() ? *lib : nlohmann::json()}};
}

nlohmann::json RunState::dataset_identity() const {
  return {{"component", component_identity(spec.dataset)}, {"identity", dataset->identity()}};
}

nlohmann::json RunState::splits() const {
  return {{"train", train_split}, {"validation", validation_split}, {"eval", eval_split}};
}

const std::string& RunState::final_head_key() const {
  return keys.count("limit") ? keys.at("limit").key : keys.at("head").key;
}

TrainOptions RunState::train_options(const std::string& stage, std::vector<std::shared_ptr<torch::nn::Module>> modules) {
  TrainOptions options;
  options.label = stage;
  options.seed = context.seed;
  options.device = context.device;
  options.modules = std::move(modules);
  // A checkpoint belongs to the stage's key: any run of the same stage continues it.
  options.checkpoint = store.work_folder(stage, keys.at(stage).key) / "checkpoint.pt";
  options.resume = true;
  if (is_writer()) {
    std::error_code ec;
    // --force computes the stage again from its start; otherwise a checkpoint whose checksum
    // fails is set aside (with a warning) rather than resumed from or failed on.
    if (forced(stage)) fs::remove(options.checkpoint, ec);
    else set_aside_bad_checkpoint(options.checkpoint);
  }
  collectives().barrier();  // the other ranks see the checkpoint as rank 0 left it
  options.num_classes = context.num_classes;
  return options;
}

absl::StatusOr<double> RunState::quantized_accuracy(TensorSource& features) {
  return eval_accuracy(*model.quantizer, features, spec.stages.at("codebook").get_int("eval_batch_size"),
                       context.device,
                       [&](const Batch& b) { return model.backbone->classify(model.quantizer->quantize(b.images).quantized); },
                       "g(Zq)");
}

absl::StatusOr<double> RunState::head_accuracy(TensorSource& features) {
  return eval_accuracy(*model.head, features, spec.stages.at("head").get_int("eval_batch_size"), context.device,
                       [&](const Batch& b) { return model.head->forward(b.images).logits; }, "head");
}

void freeze(torch::nn::Module& module) {
  module.eval();
  for (auto& p : module.parameters()) p.set_requires_grad(false);
}

absl::Status save_if_writer(torch::nn::Module& module, const fs::path& path) {
  return is_writer() ? save_module(module, path) : absl::OkStatus();
}

nlohmann::json training_record(const TrainSummary& summary) {
  return {{"steps", summary.steps},
          {"loss", summary.last_epoch_loss},
          {"epoch_losses", summary.epoch_losses},
          {"validation", summary.validation},
          {"train_seconds", summary.seconds},
          {"data_seconds", summary.data_seconds},
          {"sync_seconds", summary.sync_seconds},
          {"validation_seconds", summary.validation_seconds},
          {"replica_checks", summary.replica_checks},
          {"best_epoch", summary.best_epoch + 1}};
}

std::function<torch::Tensor(const Batch&)> head_objective(Head& head, const TrainSettings& settings) {
  return [&head, smoothing = settings.label_smoothing](const Batch& batch) {
    auto loss = cross_entropy(head.forward(batch.images).logits, batch, smoothing);
    if (auto reg = head.regularization(); reg.defined()) loss = loss + reg;
    return loss;
  };
}

TensorSource head_training_set(const Head& head, const TrainSettings& settings, TensorSource& train_set) {
  return head.reads_16bit_features() && !mixing_enabled(settings) ? train_set.in_stored_dtype() : train_set;
}

absl::StatusOr<double> eval_accuracy(torch::nn::Module& module, BatchSource& data, int64_t batch_size,
                                     torch::Device device, const std::function<torch::Tensor(const Batch&)>& logits_of,
                                     const std::string& label) {
  const bool was_training = module.is_training();
  module.eval();
  // Data-parallel: each rank scores its share; the credits and counts are summed.
  const Shard mine = data.size() >= collectives().world_size() ? my_shard(data.size()) : Shard{0, data.size()};
  const bool sharded = mine.size() < data.size();
  ShardSource part(data, mine.begin, mine.end);
  std::vector<torch::Tensor> labels;
  auto logits = map_batches(part, batch_size, device,
                            [&](const Batch& b) {
                              labels.push_back(b.labels);
                              return logits_of(b);
                            },
                            label);
  module.train(was_training);
  if (!logits.ok()) return logits.status();
  // The accuracy metric's rule (ties get fractional credit), so validation and the report agree.
  const double local = top_k_accuracy(*logits, torch::cat(labels), 1);
  if (!sharded) return local;
  auto sums = torch::tensor({local * static_cast<double>(mine.size()), static_cast<double>(mine.size())}, torch::kFloat64);
  collectives().all_reduce_sum({sums});
  return sums[0].item<double>() / sums[1].item<double>();
}

}  // namespace protoquant
