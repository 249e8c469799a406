#include "protoquant/experiment_run.h"

#include <cstdlib>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "protoquant/atomic_file.h"
#include "protoquant/cpu_info.h"
#include "protoquant/manifest.h"
#include "protoquant/model_export.h"
#include "protoquant/model_size.h"
#include "protoquant/process.h"
#include "protoquant/process_group.h"
#include "protoquant/status.h"
#include "stages/run_state.h"
#include "stages/stage_runner.h"
#include "stages/stages.h"

namespace protoquant {
namespace fs = std::filesystem;

namespace {

std::vector<std::string> metric_instance_names(const std::vector<ComponentSpec>& metrics) {
  std::map<std::string, int> seen;
  std::vector<std::string> names;
  for (const auto& metric : metrics) {
    const int n = ++seen[metric.type];
    names.push_back(n == 1 ? metric.type : fmt::format("{}_{}", metric.type, n));
  }
  return names;
}

}  // namespace

ExperimentRun::ExperimentRun(const ExperimentSpec& spec, Registry& registry, fs::path run_dir, RunMode mode,
                             RunSettings settings)
    : run_(std::make_unique<RunState>(spec, registry, std::move(run_dir), mode, std::move(settings))) {}

ExperimentRun::~ExperimentRun() = default;

Model& ExperimentRun::model() { return run_->model; }
Dataset& ExperimentRun::dataset() { return *run_->dataset; }
const ExperimentSpec& ExperimentRun::spec() const { return run_->spec; }
const fs::path& ExperimentRun::run_dir() const { return run_->run_dir; }
const ArtifactStore& ExperimentRun::store() const { return run_->store; }
absl::StatusOr<TensorSource*> ExperimentRun::eval_features() { return run_->eval_features(); }
absl::StatusOr<TensorSource*> ExperimentRun::train_features() { return run_->train_features(); }
absl::StatusOr<double> ExperimentRun::quantized_accuracy(TensorSource& f) { return run_->quantized_accuracy(f); }
absl::StatusOr<double> ExperimentRun::head_accuracy(TensorSource& f) { return run_->head_accuracy(f); }
torch::Device ExperimentRun::device() const { return run_->context.device; }
absl::StatusOr<ImageFeatures> ExperimentRun::image_features() { return run_->image_features(); }
nlohmann::json& ExperimentRun::results() { return run_->results; }

// The manifest's stages, in order. A head that learns its own prototypes (free_prototypes) runs
// with no [quantizer]: no codebook and no pruning stage.
absl::Status ExperimentRun::compose() {
  const ExperimentSpec& spec = run_->spec;
  const bool prunes = spec.stages.at("prune").get_int("target") > 0;
  if (prunes && !run_->has_quantizer()) {
    return absl::InvalidArgumentError("stages.prune.target needs a [quantizer]: pruning removes codebook codes");
  }
  auto add = [&](std::unique_ptr<Stage> stage) {
    stages_.push_back(std::move(stage));
    return stages_.back().get();
  };
  model_stages_.push_back(add(blackbox_stage()));
  add(features_stage());
  if (run_->has_quantizer()) model_stages_.push_back(add(codebook_stage()));
  if (run_->has_quantizer() && prunes) model_stages_.push_back(add(prune_stage()));
  model_stages_.push_back(add(head_stage()));
  if (spec.stages.at("limit").get_int("k") > 0) model_stages_.push_back(add(limit_stage()));
  run_->metric_instances = metric_instance_names(spec.metrics);
  metric_pass_ = metric_pass();
  for (size_t i = 0; i < spec.metrics.size(); ++i) {
    metric_stages_.push_back(add(metric_stage(i, run_->metric_instances[i], metric_pass_)));
  }
  if (spec.report.get_bool("enabled")) {
    auto report = std::make_unique<ReportStage>();
    report_ = report.get();
    add(std::move(report));
  }
  for (const auto& stage : stages_) run_->stage_order.push_back(stage->name());
  return absl::OkStatus();
}

absl::Status ExperimentRun::compute_keys() {
  if (run_->opening()) return absl::OkStatus();
  const Params& exp = run_->spec.experiment;
  PQ_ASSIGN_OR_RETURN(const nlohmann::json core, core_identity());
  const nlohmann::json common = {{"core", core},
                                 {"torch", TORCH_VERSION},
                                 {"seed", exp.get_int("seed")},
                                 {"device", exp.get_string("device")}};
  nlohmann::json artifacts;
  for (const auto& stage : stages_) {
    PQ_ASSIGN_OR_RETURN(nlohmann::json inputs, stage->key_inputs(*run_));
    inputs["common"] = common;
    run_->keys[stage->name()] = make_stage_key(stage->name(), std::move(inputs));
    artifacts[stage->name()] = run_->keys[stage->name()].key;
  }
  run_->results["artifacts"] = artifacts;
  return absl::OkStatus();
}

absl::Status ExperimentRun::prepare_folder() {
  if (run_->opening()) {
    if (!fs::exists(run_->run_dir / "manifest.toml")) {
      return absl::NotFoundError(fmt::format("{}: not a run folder", run_->run_dir.string()));
    }
    return absl::OkStatus();
  }
  // Data-parallel: rank 0 prepares the folder while the others wait for its word.
  if (!is_writer()) return rank0_status(absl::OkStatus());
  return rank0_status(clear_folder());
}

absl::Status ExperimentRun::clear_folder() {
  const fs::path& run_dir = run_->run_dir;
  std::error_code ec;
  fs::create_directories(run_dir / "stages", ec);
  if (ec) return absl::InternalError(fmt::format("{}: cannot create run folder: {}", run_dir.string(), ec.message()));
  // Nothing from an earlier run in this folder may pass for this run's: its records go first.
  fs::remove(run_dir / "results.json", ec);
  fs::remove_all(run_dir / "stages", ec);
  fs::remove_all(run_dir / "checkpoints", ec);  // the layout before the store
  fs::remove_all(run_dir / "edits", ec);
  fs::create_directories(run_dir / "stages", ec);
  return write_file_atomic(run_dir / "manifest.toml", resolved_manifest_toml(run_->spec.resolved));
}

// Process settings, the dataset, the stages and their keys: what plan() and train_stages() both need.
absl::Status ExperimentRun::start() {
  if (started_) return absl::OkStatus();
  started_ = true;
  RunState& run = *run_;
  const Params& exp = run.spec.experiment;
  const int64_t threads = resolve_threads(exp.get_int("threads"));
  torch::set_num_threads(static_cast<int>(threads));
  run.context.seed = static_cast<uint64_t>(exp.get_int("seed"));
  torch::manual_seed(run.context.seed);
  run.context.device = torch::Device(exp.get_string("device") == "cuda" ? torch::kCUDA : torch::kCPU);
  if (run.context.device.is_cuda() && !torch::cuda::is_available()) {
    return absl::FailedPreconditionError("experiment.device = \"cuda\" but this LibTorch sees no CUDA device");
  }
  if (run.context.device.is_cuda() && collectives().world_size() > 1) {
    // One GPU per local rank (LOCAL_RANK), as torchrun lays them out.
    const char* local_rank = std::getenv("LOCAL_RANK");
    const int index = local_rank ? std::atoi(local_rank) : 0;
    if (index >= static_cast<int>(torch::cuda::device_count())) {
      return absl::FailedPreconditionError(fmt::format("LOCAL_RANK {} but this machine has {} CUDA device(s)", index,
                                                       torch::cuda::device_count()));
    }
    run.context.device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  PQ_ASSIGN_OR_RETURN(run.backbone_precision,
                      parse_backbone_precision(exp.get_string("backbone_precision"), run.context.device));
  run.context.base_dir = run.spec.base_dir.string();
  run.train_split = exp.get_string("train_split");
  run.eval_split = exp.get_string("eval_split");
  run.validation_split = exp.get_string("validation_split").empty() ? run.eval_split : exp.get_string("validation_split");
  run.results["experiment"] = exp.get_string("name");
  run.results["run_dir"] = fs::absolute(run.run_dir).string();
  run.results["store"] = fs::absolute(run.store.root()).string();
  run.results["environment"] = {{"threads", threads},
                                {"device", run.context.device.str()},
                                {"torch", TORCH_VERSION},
                                {"hardware_threads", std::thread::hardware_concurrency()},
                                {"cpu", cpu_info().describe()},
                                {"cpu_model", cpu_info().model},
                                {"cpu_features", cpu_info().features},
                                {"world_size", collectives().world_size()},
                                {"backbone_precision", precision_name(run.backbone_precision)}};
  PQ_RETURN_IF_ERROR(load_dataset());
  PQ_RETURN_IF_ERROR(compose());
  return compute_keys();
}

absl::Status ExperimentRun::load_dataset() {
  RunState& run = *run_;
  const auto start = Clock::now();
  const std::string dataset_key = run.spec.dataset.type + run.spec.dataset.params.to_json().dump();
  if (run.settings.datasets && run.settings.datasets->count(dataset_key)) {
    run.dataset = run.settings.datasets->at(dataset_key);
  } else {
    PQ_ASSIGN_OR_RETURN(run.dataset, run.registry.datasets.build(run.spec.dataset.type, run.spec.dataset.params, run.context));
    if (run.settings.datasets) (*run.settings.datasets)[dataset_key] = run.dataset;
  }
  const DatasetInfo& info = run.dataset->info();
  for (const auto& split : {run.train_split, run.eval_split, run.validation_split}) {
    if (std::find(info.splits.begin(), info.splits.end(), split) == info.splits.end()) {
      return absl::InvalidArgumentError(fmt::format("dataset '{}' has no split '{}' (it has: {})", info.name, split,
                                                    fmt::join(info.splits, ", ")));
    }
  }
  run.context.num_classes = info.num_classes;
  run.context.image_channels = info.channels;
  run.context.image_height = info.height;
  run.context.image_width = info.width;
  run.results["stages"]["dataset"] = {{"train_samples", run.dataset->size(run.train_split)},
                                      {"eval_samples", run.dataset->size(run.eval_split)},
                                      {"classes", info.num_classes},
                                      {"seconds", seconds_since(start)}};
  return absl::OkStatus();
}

absl::StatusOr<std::vector<StagePlan>> ExperimentRun::plan() {
  PQ_RETURN_IF_ERROR(start());
  std::vector<StagePlan> plan;
  for (const auto& stage : stages_) {
    if (!stage->filed()) continue;
    const std::string& key = run_->keys.at(stage->name()).key;
    plan.push_back({stage->name(), key, !run_->forced(stage->name()) && run_->store.contains(stage->name(), key),
                    stage->trains()});
  }
  return plan;
}

absl::Status ExperimentRun::train_stages() {
  PQ_RETURN_IF_ERROR(start());
  PQ_RETURN_IF_ERROR(prepare_folder());
  for (Stage* stage : model_stages_) PQ_RETURN_IF_ERROR(run_stage(*run_, *stage).status());
  return absl::OkStatus();
}

absl::Status ExperimentRun::evaluate() {
  PQ_RETURN_IF_ERROR(start());
  const auto start = Clock::now();
  RunState& run = *run_;
  // The instances not filed share one pass; --dump computes every one (filed ones too) for its inputs.
  std::vector<size_t> pending;
  for (size_t i = 0; i < metric_stages_.size(); ++i) {
    const std::string name = metric_stages_[i]->name();
    if (run.opening()) continue;
    // Rank 0's answer: every rank takes part in the same pass.
    const bool filed = rank0_decides(!run.forced(name) && run.store.contains(name, run.keys.at(name).key));
    if (!filed || run.settings.dump) pending.push_back(i);
  }
  if (!pending.empty()) {
    PQ_RETURN_IF_ERROR(run.eval_features().status());
    PQ_RETURN_IF_ERROR(run_metric_pass(run, *metric_pass_, pending));
  }
  for (Stage* stage : metric_stages_) PQ_RETURN_IF_ERROR(run_stage(run, *stage).status());
  const ModelSize size = model_size(run.model.head->class_weights());
  run.results["metrics"]["model_size"] = {
      {"local_size", size.local_size}, {"global_size", size.global_size}, {"weight_sparsity", size.sparsity}};
  if (is_writer()) PQ_RETURN_IF_ERROR(export_model(run.model, run.spec.resolved, run.run_dir / "model" / "protoquant.pt"));
  run.results["stages"]["evaluate"] = {{"seconds", seconds_since(start)}};
  run.results["manifest"] = run.spec.resolved;
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> ExperimentRun::report_figures(
    const std::function<absl::StatusOr<nlohmann::json>()>& draw) {
  if (run_->opening() || report_ == nullptr) return draw();
  report_->set_draw(draw);
  PQ_RETURN_IF_ERROR(run_stage(*run_, *report_).status());
  if (report_->drawn()) return *report_->drawn();  // computed here; otherwise reused, and placed
  return read_json_file(report_->outputs(*run_).at("figures.json"));
}

}  // namespace protoquant
