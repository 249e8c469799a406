#include "protoquant/experiment_run.h"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <thread>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "protoquant/atomic_file.h"
#include "protoquant/batch_mixing.h"
#include "protoquant/checkpoint.h"
#include "protoquant/classification.h"
#include "protoquant/cpu_info.h"
#include "protoquant/digest.h"
#include "protoquant/feature_cache.h"
#include "protoquant/manifest.h"
#include "protoquant/evaluation_pass.h"
#include "protoquant/metric.h"
#include "protoquant/model_export.h"
#include "protoquant/model_size.h"
#include "protoquant/process.h"
#include "protoquant/process_group.h"
#include "protoquant/status.h"

namespace protoquant {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Data-parallel: every rank holds the same module; rank 0 writes it.
absl::Status save_if_writer(torch::nn::Module& module, const fs::path& path) {
  return is_writer() ? save_module(module, path) : absl::OkStatus();
}

void freeze(torch::nn::Module& module) {
  module.eval();
  for (auto& p : module.parameters()) p.set_requires_grad(false);
}

// What a training stage reports (best_epoch is 1-based, 0 when not validated).
nlohmann::json training_record(const TrainSummary& summary) {
  return {{"steps", summary.steps},
          {"loss", summary.last_epoch_loss},
          {"epoch_losses", summary.epoch_losses},
          {"validation", summary.validation},
          {"train_seconds", summary.seconds},
          {"data_seconds", summary.data_seconds},
          {"replica_checks", summary.replica_checks},
          {"best_epoch", summary.best_epoch + 1}};
}

// The accuracy metric's rule (ties get fractional credit), so validation and the report agree.
double accuracy_of(const torch::Tensor& logits, const torch::Tensor& labels) {
  return top_k_accuracy(logits, labels, 1);
}

// Top-1 accuracy of `logits_of` over `data`, with `module` in eval mode for the pass (its mode is
// restored after): the validation of every stage.
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
  const double local = accuracy_of(*logits, torch::cat(labels));
  if (!sharded) return local;
  auto sums = torch::tensor({local * static_cast<double>(mine.size()), static_cast<double>(mine.size())}, torch::kFloat64);
  collectives().all_reduce_sum({sums});
  return sums[0].item<double>() / sums[1].item<double>();
}

// Where the store is: the one the CLI names, else experiment.store, else beside the run folder
// (runs/<name>-<time>/ and runs/store/), so every run under one output folder shares it.
fs::path store_root(const ExperimentSpec& spec, const fs::path& run_dir, const RunSettings& settings) {
  if (!settings.store.empty()) return settings.store;
  if (!spec.experiment.get_string("store").empty()) return spec.experiment.get_string("store");
  return fs::absolute(run_dir).parent_path() / "store";
}

// Instance names of the manifest's metrics: the metric's type, "<type>_2", "<type>_3" for
// repeats, so two instances of one metric never overwrite each other's values.
std::vector<std::string> metric_instance_names(const std::vector<ComponentSpec>& metrics) {
  std::map<std::string, int> seen;
  std::vector<std::string> names;
  for (const auto& metric : metrics) {
    const int n = ++seen[metric.type];
    names.push_back(n == 1 ? metric.type : fmt::format("{}_{}", metric.type, n));
  }
  return names;
}

std::string short_key(const std::string& key) { return key.substr(0, 12); }

}  // namespace

ExperimentRun::ExperimentRun(const ExperimentSpec& spec, Registry& registry, fs::path run_dir, RunMode mode,
                             RunSettings settings)
    : spec_(spec),
      registry_(registry),
      run_dir_(std::move(run_dir)),
      mode_(mode),
      settings_(std::move(settings)),
      store_(store_root(spec_, run_dir_, settings_)) {}

bool ExperimentRun::forced(const std::string& stage) const {
  if (settings_.force.empty()) return false;
  // Recomputed once per command: a later sweep member sharing this stage's key reuses it.
  if (settings_.recomputed && keys_.count(stage) && settings_.recomputed->count(stage + "/" + keys_.at(stage).key)) {
    return false;
  }
  const auto at = [&](const std::string& name) {
    return std::find(stage_order_.begin(), stage_order_.end(), name) - stage_order_.begin();
  };
  return at(stage) >= at(settings_.force);
}

absl::StatusOr<ExperimentRun::Outcome> ExperimentRun::run_stage(
    const std::string& stage, const std::map<std::string, fs::path>& files,
    const std::function<absl::StatusOr<nlohmann::json>()>& compute, const std::function<absl::Status()>& prepare) {
  const auto start = Clock::now();
  const fs::path record_file = run_dir_ / "stages" / (stage + ".json");
  if (mode_ == RunMode::kOpen) {
    auto record = read_json_file(record_file);
    if (!record.ok()) {
      return absl::FailedPreconditionError(
          fmt::format("{}: the run has no finished '{}' stage (run it first)", run_dir_.string(), stage));
    }
    results_["stages"][stage] = *record;
    return Outcome{*record, true};
  }
  const StageKey& key = keys_.at(stage);
  // Data-parallel: rank 0 decides whether the stage is reused or computed (so every rank takes
  // the same path through the collectives), and only it touches the store and the run folder;
  // the others compute beside it and read what it placed.
  const bool writer = is_writer();
  auto reuse = [&](const nlohmann::json& artifact) -> absl::StatusOr<Outcome> {
    for (const auto& [name, destination] : files) {
      PQ_RETURN_IF_ERROR(place_file(store_.folder(stage, key.key) / name, destination));
    }
    nlohmann::json record = artifact["record"];
    record["computed_seconds"] = record.value("seconds", 0.0);
    record["seconds"] = seconds_since(start);
    record["reused"] = true;
    fmt::print(stderr, "[{}] reused {} from {}\n", stage, short_key(key.key), store_.root().string());
    PQ_RETURN_IF_ERROR(write_file_atomic(record_file, record.dump(2) + "\n"));
    results_["stages"][stage] = record;
    return Outcome{record, true};
  };
  // A non-writer's copy of what rank 0 filed or placed, once rank 0 says it is there.
  auto follow = [&](const absl::Status& rank0) -> absl::StatusOr<Outcome> {
    PQ_RETURN_IF_ERROR(rank0);
    PQ_ASSIGN_OR_RETURN(nlohmann::json record, read_json_file(record_file));
    results_["stages"][stage] = record;
    return Outcome{record, record.value("reused", false)};
  };
  const bool force = forced(stage);
  std::optional<nlohmann::json> filed;
  std::optional<ArtifactStore::Lock> lock;
  absl::Status looked = absl::OkStatus();
  if (writer) {
    if (!force) filed = store_.find(stage, key.key);
    if (!filed) {
      // Under the lock: a sweep member computing the same stage files it first, then this one reuses it.
      auto locked = store_.lock(stage, key.key);
      if (locked.ok()) {
        lock.emplace(std::move(*locked));
        if (!force) filed = store_.find(stage, key.key);
      } else {
        looked = locked.status();
      }
    }
  }
  PQ_RETURN_IF_ERROR(rank0_status(looked));
  if (rank0_decides(filed.has_value())) {
    if (!writer) return follow(rank0_status(absl::OkStatus()));
    auto outcome = reuse(*filed);
    PQ_RETURN_IF_ERROR(rank0_status(outcome.status()));
    return outcome;
  }
  std::error_code ec;
  if (writer) fs::create_directories(store_.work_folder(stage, key.key), ec);
  // The features a stage reads are the features stage's time, not this one's.
  if (prepare) PQ_RETURN_IF_ERROR(prepare());
  const auto compute_start = Clock::now();
  PQ_ASSIGN_OR_RETURN(nlohmann::json record, compute());
  record["key"] = key.key;
  record["seconds"] = seconds_since(compute_start);
  record["reused"] = false;
  if (collectives().world_size() > 1) record["world_size"] = collectives().world_size();
  if (!writer) return follow(rank0_status(absl::OkStatus()));
  absl::Status filed_now = [&]() -> absl::Status {
    PQ_RETURN_IF_ERROR(store_.publish(stage, key.key, key.inputs, record, files, /*replace=*/force));
    if (force && settings_.recomputed) settings_.recomputed->insert(stage + "/" + key.key);
    fmt::print(stderr, "[{}] done in {:.1f} s (key {})\n", stage, record["seconds"].get<double>(), short_key(key.key));
    return write_file_atomic(record_file, record.dump(2) + "\n");
  }();
  PQ_RETURN_IF_ERROR(rank0_status(filed_now));
  results_["stages"][stage] = record;
  return Outcome{record, false};
}

// Every stage builds its components from its own seed, so what it builds does not depend on
// whether the stages before it were trained in this process or reused from the store.
void ExperimentRun::reseed(int stage) const {
  torch::manual_seed(context_.seed * 1000003ULL + 7919ULL * static_cast<uint64_t>(stage + 1));
}

TrainOptions ExperimentRun::train_options(const std::string& stage,
                                          std::vector<std::shared_ptr<torch::nn::Module>> modules) {
  TrainOptions options;
  options.label = stage;
  options.seed = context_.seed;
  options.device = context_.device;
  options.modules = std::move(modules);
  // A checkpoint belongs to the stage's key: any run of the same stage continues it.
  options.checkpoint = store_.work_folder(stage, keys_.at(stage).key) / "checkpoint.pt";
  options.resume = true;
  if (is_writer()) {
    std::error_code ec;
    // --force computes the stage again from its start; otherwise a checkpoint whose checksum
    // fails is set aside (with a warning) rather than resumed from or failed on.
    if (forced(stage)) fs::remove(options.checkpoint, ec);
    else set_aside_bad_checkpoint(options.checkpoint);
  }
  collectives().barrier();  // the other ranks see the checkpoint as rank 0 left it
  options.num_classes = context_.num_classes;
  return options;
}

absl::Status ExperimentRun::prepare_folder() {
  if (mode_ == RunMode::kOpen) {
    if (!fs::exists(run_dir_ / "manifest.toml")) return absl::NotFoundError(fmt::format("{}: not a run folder", run_dir_.string()));
    return absl::OkStatus();
  }
  // Data-parallel: rank 0 prepares the folder while the others wait for its word.
  if (!is_writer()) return rank0_status(absl::OkStatus());
  return rank0_status(clear_folder());
}

absl::Status ExperimentRun::clear_folder() {
  std::error_code ec;
  fs::create_directories(run_dir_ / "stages", ec);
  if (ec) return absl::InternalError(fmt::format("{}: cannot create run folder: {}", run_dir_.string(), ec.message()));
  // Nothing from an earlier run in this folder may pass for this run's: its records go first.
  fs::remove(run_dir_ / "results.json", ec);
  fs::remove_all(run_dir_ / "stages", ec);
  fs::remove_all(run_dir_ / "checkpoints", ec);  // the layout before the store
  fs::remove_all(run_dir_ / "edits", ec);
  fs::create_directories(run_dir_ / "stages", ec);
  return write_file_atomic(run_dir_ / "manifest.toml", resolved_manifest_toml(spec_.resolved));
}

// Process settings, the dataset and every stage's key: what plan() and train_stages() both need.
absl::Status ExperimentRun::start() {
  if (started_) return absl::OkStatus();
  started_ = true;
  const Params& exp = spec_.experiment;
  const int64_t threads = resolve_threads(exp.get_int("threads"));
  torch::set_num_threads(static_cast<int>(threads));
  context_.seed = static_cast<uint64_t>(exp.get_int("seed"));
  torch::manual_seed(context_.seed);
  context_.device = torch::Device(exp.get_string("device") == "cuda" ? torch::kCUDA : torch::kCPU);
  if (context_.device.is_cuda() && !torch::cuda::is_available()) {
    return absl::FailedPreconditionError("experiment.device = \"cuda\" but this LibTorch sees no CUDA device");
  }
  if (context_.device.is_cuda() && collectives().world_size() > 1) {
    // One GPU per local rank (LOCAL_RANK), as torchrun lays them out.
    const char* local_rank = std::getenv("LOCAL_RANK");
    const int index = local_rank ? std::atoi(local_rank) : 0;
    if (index >= static_cast<int>(torch::cuda::device_count())) {
      return absl::FailedPreconditionError(fmt::format("LOCAL_RANK {} but this machine has {} CUDA device(s)", index,
                                                       torch::cuda::device_count()));
    }
    context_.device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  context_.base_dir = spec_.base_dir.string();
  train_split_ = exp.get_string("train_split");
  eval_split_ = exp.get_string("eval_split");
  validation_split_ = exp.get_string("validation_split").empty() ? eval_split_ : exp.get_string("validation_split");
  results_["experiment"] = exp.get_string("name");
  results_["run_dir"] = fs::absolute(run_dir_).string();
  results_["store"] = fs::absolute(store_.root()).string();
  results_["environment"] = {{"threads", threads},
                             {"device", context_.device.str()},
                             {"torch", TORCH_VERSION},
                             {"hardware_threads", std::thread::hardware_concurrency()},
                             {"cpu", cpu_info().describe()},
                             {"cpu_model", cpu_info().model},
                             {"cpu_features", cpu_info().features},
                             {"world_size", collectives().world_size()}};
  PQ_RETURN_IF_ERROR(load_dataset());
  return compute_keys();
}

nlohmann::json ExperimentRun::component_identity(const ComponentSpec& component) const {
  std::string library;
  for (const auto& entry : registry_.entries(component.kind)) {
    if (entry.name == component.type) library = entry.library;
  }
  auto lib = library.empty() ? absl::StatusOr<nlohmann::json>(nlohmann::json()) : library_identity(library);
  return {{"type", component.type}, {"params", component.params.to_json()}, {"library", lib.ok() ? *lib : nlohmann::json()}};
}

absl::Status ExperimentRun::compute_keys() {
  if (mode_ == RunMode::kOpen) return absl::OkStatus();
  const Params& exp = spec_.experiment;
  PQ_ASSIGN_OR_RETURN(const nlohmann::json core, core_identity());
  const nlohmann::json common = {{"core", core},
                                 {"torch", TORCH_VERSION},
                                 {"seed", exp.get_int("seed")},
                                 {"device", exp.get_string("device")}};
  const nlohmann::json dataset = {{"component", component_identity(spec_.dataset)}, {"identity", dataset_->identity()}};
  const nlohmann::json splits = {{"train", train_split_}, {"validation", validation_split_}, {"eval", eval_split_}};
  auto add = [&](const std::string& stage, nlohmann::json inputs) {
    inputs["common"] = common;
    keys_[stage] = make_stage_key(stage, std::move(inputs));
    stage_order_.push_back(stage);
  };

  const Params& blackbox = spec_.stages.at("blackbox");
  nlohmann::json blackbox_inputs = {{"backbone", component_identity(spec_.backbone)}};
  if (const std::string weights = blackbox.get_string("weights"); !weights.empty()) {
    // Brought by the user: the file's content is the input, not a training recipe.
    PQ_ASSIGN_OR_RETURN(const std::string digest, sha256_file(weights));
    blackbox_inputs["weights_sha256"] = digest;
  } else {
    blackbox_inputs["settings"] = blackbox.to_json();
    blackbox_inputs["dataset"] = dataset;
    blackbox_inputs["splits"] = splits;
  }
  add("blackbox", blackbox_inputs);
  // Features: a function of the frozen backbone, the data and the dtype (not a filed stage: the
  // feature cache files them, per split, when store_features is set).
  add("features", {{"blackbox", keys_["blackbox"].key}, {"dataset", dataset}, {"dtype", exp.get_string("feature_dtype")}});
  const std::string features = keys_["features"].key;
  // A head that learns its own prototypes (free_prototypes) runs with no [quantizer]: no codebook
  // and no pruning stage.
  std::string quantizer_stage;
  if (has_quantizer()) {
    add("codebook", {{"features", features},
                     {"quantizer", component_identity(spec_.quantizer)},
                     {"settings", spec_.stages.at("codebook").to_json()},
                     {"splits", splits}});
    quantizer_stage = "codebook";
  } else if (spec_.stages.at("prune").get_int("target") > 0) {
    return absl::InvalidArgumentError("stages.prune.target needs a [quantizer]: pruning removes codebook codes");
  }
  if (has_quantizer() && spec_.stages.at("prune").get_int("target") > 0) {
    add("prune", {{"codebook", keys_["codebook"].key}, {"features", features}, {"settings", spec_.stages.at("prune").to_json()},
                  {"splits", splits}});
    quantizer_stage = "prune";
  }
  add("head", {{"quantizer", quantizer_stage.empty() ? std::string("none") : keys_[quantizer_stage].key},
               {"features", features},
               {"head", component_identity(spec_.head)},
               {"settings", spec_.stages.at("head").to_json()},
               {"splits", splits}});
  metric_instances_ = metric_instance_names(spec_.metrics);
  for (size_t i = 0; i < spec_.metrics.size(); ++i) {
    add("metric." + metric_instances_[i],
        {{"head", keys_["head"].key}, {"features", features}, {"metric", component_identity(spec_.metrics[i])},
         {"split", eval_split_}});
  }
  // The report's figures show the head, the metrics' values (purity per prototype) and the
  // codebook's usage (both in the head's key's chain or the metrics' keys), drawn as [report] says.
  if (spec_.report.get_bool("enabled")) {
    nlohmann::json metrics = nlohmann::json::object();
    for (const auto& instance : metric_instances_) metrics[instance] = keys_["metric." + instance].key;
    add("report", {{"head", keys_["head"].key}, {"metrics", metrics}, {"settings", spec_.report.to_json()},
                   {"split", eval_split_}});
  }
  nlohmann::json artifacts;
  for (const auto& stage : stage_order_) artifacts[stage] = keys_[stage].key;
  results_["artifacts"] = artifacts;
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> ExperimentRun::report_figures(
    const std::function<absl::StatusOr<nlohmann::json>()>& draw) {
  if (mode_ == RunMode::kOpen || keys_.count("report") == 0) return draw();
  // Kept in the run folder beside report.html: the figures this run's page was drawn from.
  const fs::path saved = run_dir_ / "report" / "figures.json";
  std::optional<nlohmann::json> drawn;
  PQ_RETURN_IF_ERROR(run_stage("report", {{"figures.json", saved}}, [&]() -> absl::StatusOr<nlohmann::json> {
    PQ_ASSIGN_OR_RETURN(drawn, draw());
    PQ_RETURN_IF_ERROR(write_file_atomic(saved, drawn->dump() + "\n"));
    return nlohmann::json{{"explanations", (*drawn)["explanations"].size()}};
  }).status());
  if (drawn) return *drawn;  // computed here; otherwise reused, and placed at `saved`
  return read_json_file(saved);
}

absl::StatusOr<std::vector<StagePlan>> ExperimentRun::plan() {
  PQ_RETURN_IF_ERROR(start());
  std::vector<StagePlan> plan;
  for (const auto& stage : stage_order_) {
    if (stage == "features") continue;
    plan.push_back({stage, keys_[stage].key, !forced(stage) && store_.contains(stage, keys_[stage].key)});
  }
  return plan;
}

absl::Status ExperimentRun::train_stages() {
  PQ_RETURN_IF_ERROR(start());
  PQ_RETURN_IF_ERROR(prepare_folder());
  PQ_RETURN_IF_ERROR(blackbox());
  PQ_RETURN_IF_ERROR(codebook());
  PQ_RETURN_IF_ERROR(prune());
  return head();
}

absl::Status ExperimentRun::load_dataset() {
  const auto start = Clock::now();
  const std::string dataset_key = spec_.dataset.type + spec_.dataset.params.to_json().dump();
  if (settings_.datasets && settings_.datasets->count(dataset_key)) {
    dataset_ = settings_.datasets->at(dataset_key);
  } else {
    PQ_ASSIGN_OR_RETURN(dataset_, registry_.datasets.build(spec_.dataset.type, spec_.dataset.params, context_));
    if (settings_.datasets) (*settings_.datasets)[dataset_key] = dataset_;
  }
  const DatasetInfo& info = dataset_->info();
  for (const auto& split : {train_split_, eval_split_, validation_split_}) {
    if (std::find(info.splits.begin(), info.splits.end(), split) == info.splits.end()) {
      return absl::InvalidArgumentError(fmt::format("dataset '{}' has no split '{}' (it has: {})", info.name, split,
                                                    fmt::join(info.splits, ", ")));
    }
  }
  context_.num_classes = info.num_classes;
  context_.image_channels = info.channels;
  context_.image_height = info.height;
  context_.image_width = info.width;
  results_["stages"]["dataset"] = {{"train_samples", dataset_->size(train_split_)},
                                   {"eval_samples", dataset_->size(eval_split_)},
                                   {"classes", info.num_classes},
                                   {"seconds", seconds_since(start)}};
  return absl::OkStatus();
}

// Stage 0: the black-box classifier, trained here or brought by the user.
absl::Status ExperimentRun::blackbox() {
  reseed(0);
  PQ_ASSIGN_OR_RETURN(model_.backbone, registry_.backbones.build(spec_.backbone.type, spec_.backbone.params, context_));
  model_.backbone->to(context_.device);
  context_.feature_channels = model_.backbone->channels();
  const fs::path saved = run_dir_ / "model" / "backbone.pt";
  auto backbone = model_.backbone;
  PQ_ASSIGN_OR_RETURN(const Outcome outcome, run_stage("blackbox", {{"backbone.pt", saved}}, [&]() -> absl::StatusOr<nlohmann::json> {
    const Params& stage = spec_.stages.at("blackbox");
    const TrainSettings settings = TrainSettings::from(stage);
    const std::string weights = stage.get_string("weights");
    nlohmann::json record = {{"weights", weights}};
    if (!weights.empty()) {
      // A black box brought by the user (or an earlier run): loaded, not trained.
      PQ_RETURN_IF_ERROR(load_module(*backbone, weights));
      backbone->to(context_.device);
    } else {
      DatasetSource source(*dataset_, train_split_);
      TrainOptions options = train_options("blackbox", {backbone});
      options.validate = [&]() -> absl::StatusOr<double> {
        DatasetSource validation(*dataset_, validation_split_, /*augment=*/false);
        return eval_accuracy(*backbone, validation, settings.eval_batch_size, context_.device,
                             [&](const Batch& b) { return backbone->forward(b.images); }, "validate blackbox");
      };
      backbone->train();
      PQ_ASSIGN_OR_RETURN(auto summary, train(settings, backbone->parameters(), source,
                                              [&](const Batch& batch) {
                                                return cross_entropy(backbone->forward(batch.images), batch,
                                                                     settings.label_smoothing);
                                              },
                                              options));
      record.update(training_record(summary));
    }
    freeze(*backbone);
    PQ_RETURN_IF_ERROR(save_if_writer(*backbone, saved));
    return record;
  }));
  if (outcome.reused) {
    PQ_RETURN_IF_ERROR(load_module(*backbone, saved));
    backbone->to(context_.device);
  }
  freeze(*backbone);
  return absl::OkStatus();
}

// The backbone is frozen from here on: a split's feature maps are computed once, when a stage
// that reads them is computed, or read from the store's feature cache.
absl::StatusOr<std::unique_ptr<TensorSource>> ExperimentRun::extract(const std::string& split) {
  const Params& exp = spec_.experiment;
  const int64_t batch_size = spec_.stages.at("blackbox").get_int("eval_batch_size");
  const auto dtype = feature_dtype(exp.get_string("feature_dtype"));
  std::optional<FeatureCache> cache;
  if (exp.get_bool("store_features") && mode_ != RunMode::kOpen) cache.emplace(store_.features_folder());
  // One entry per (features key, split).
  const std::string key = mode_ == RunMode::kOpen ? "" : sha256_hex(keys_.at("features").key + "|" + split);
  nlohmann::json& record = results_["stages"]["features"];
  const auto start = Clock::now();
  if (cache) {
    // Data-parallel: rank 0's answer, so that every rank extracts or none does.
    std::optional<CachedFeatures> hit;
    if (is_writer()) hit = cache->load(key);
    if (rank0_decides(hit.has_value())) {
      if (!hit) hit = cache->load(key);
      if (!hit) {
        return absl::InternalError(fmt::format("rank {}: cannot read the feature cache entry rank 0 read: {}",
                                               collectives().rank(), cache->path_for(key).string()));
      }
      if (is_writer()) fmt::print(stderr, "[features] {}: from the store ({})\n", split, cache->path_for(key).string());
      record["cache"][split] = {{"hit", true}, {"file", cache->path_for(key).string()}};
      record["splits"][split] = {{"from", "cache"}, {"seconds", seconds_since(start)}};
      record["seconds"] = record.value("seconds", 0.0) + seconds_since(start);
      return std::make_unique<TensorSource>(hit->features, hit->labels);
    }
  }
  DatasetSource source(*dataset_, split, /*augment=*/false);  // features of un-augmented images
  // Data-parallel: each rank extracts its share of the split; every rank gets the whole.
  std::vector<torch::Tensor> label_parts;
  PQ_ASSIGN_OR_RETURN(torch::Tensor features,
                      map_batches_sharded(source, batch_size, context_.device,
                                          [&](const Batch& batch) {
                                            label_parts.push_back(batch.labels);
                                            return model_.backbone->features(batch.images).to(dtype);
                                          },
                                          fmt::format("features {}", split)));
  torch::Tensor labels = torch::cat(label_parts);
  if (labels.size(0) != features.size(0)) labels = gather_rows(labels, features.size(0));
  record["splits"][split] = {{"from", "backbone"}, {"seconds", seconds_since(start)}};
  record["seconds"] = record.value("seconds", 0.0) + seconds_since(start);
  if (cache && is_writer()) {
    PQ_RETURN_IF_ERROR(cache->store(key, features, labels));
    record["cache"][split] = {{"hit", false}, {"file", cache->path_for(key).string()}};
  }
  record["shape"] = std::vector<int64_t>(features.sizes().begin() + 1, features.sizes().end());
  record["dtype"] = exp.get_string("feature_dtype");
  record["bytes_per_image"] = features.numel() / std::max<int64_t>(1, features.size(0)) * features.element_size();
  return std::make_unique<TensorSource>(features, labels);
}

absl::Status ExperimentRun::read_training_features() {
  PQ_RETURN_IF_ERROR(train_features().status());
  PQ_RETURN_IF_ERROR(validation_features().status());
  return eval_features().status();  // the codebook's usage is measured on it
}

absl::StatusOr<TensorSource*> ExperimentRun::train_features() {
  if (!train_features_) {
    PQ_ASSIGN_OR_RETURN(train_features_, extract(train_split_));
  }
  return train_features_.get();
}

absl::StatusOr<TensorSource*> ExperimentRun::eval_features() {
  if (!eval_features_) {
    PQ_ASSIGN_OR_RETURN(eval_features_, extract(eval_split_));
  }
  return eval_features_.get();
}

absl::StatusOr<TensorSource*> ExperimentRun::validation_features() {
  if (validation_split_ == eval_split_) return eval_features();
  if (!separate_validation_features_) {
    PQ_ASSIGN_OR_RETURN(separate_validation_features_, extract(validation_split_));
  }
  return separate_validation_features_.get();
}

absl::StatusOr<double> ExperimentRun::quantized_accuracy(TensorSource& features) {
  return eval_accuracy(*model_.quantizer, features, spec_.stages.at("codebook").get_int("eval_batch_size"),
                       context_.device,
                       [&](const Batch& b) {
                         return model_.backbone->classify(model_.quantizer->quantize(b.images).quantized);
                       },
                       "g(Zq)");
}

absl::StatusOr<double> ExperimentRun::head_accuracy(TensorSource& features) {
  return eval_accuracy(*model_.head, features, spec_.stages.at("head").get_int("eval_batch_size"), context_.device,
                       [&](const Batch& b) { return model_.head->forward(b.images).logits; }, "head");
}

// Usage over the whole evaluation split, and how well g classifies quantized maps: filed with
// the codebook (and prune) stage, so a reused codebook reports them without any feature pass.
absl::StatusOr<nlohmann::json> ExperimentRun::measure_usage() {
  model_.quantizer->reset_usage();
  PQ_ASSIGN_OR_RETURN(TensorSource* eval, eval_features());
  PQ_ASSIGN_OR_RETURN(const double accuracy, quantized_accuracy(*eval));
  if (eval->size() >= collectives().world_size()) model_.quantizer->all_reduce_usage();  // each rank counted its share
  const auto usage = model_.quantizer->usage();
  nlohmann::json measured = usage.to_json(false);
  measured["quantized_blackbox_accuracy"] = accuracy;
  measured["counts"] = usage.counts;
  if (is_writer()) fmt::print(stderr, "[codebook] {} of {} codes used on {}, perplexity {:.1f}, g(Zq) accuracy {:.4f}\n", usage.used,
             usage.codebooks * usage.codes_per_codebook, eval_split_, usage.mean_perplexity, accuracy);
  return measured;
}

// The last quantizer stage's usage is the run's codebook metric; its per-code counts stay beside
// the metrics (a list, not a value).
void ExperimentRun::report_usage(const nlohmann::json& record) {
  nlohmann::json usage = record.value("usage", nlohmann::json::object());
  results_["codebook_counts"] = usage.value("counts", nlohmann::json::array());
  usage.erase("counts");
  results_["metrics"]["codebook"] = usage;
}

// Stage 1's objective (also stage 2's re-training): w_task CE(g(Zq), y) + w_cb codebook loss.
std::function<torch::Tensor(const Batch&)> ExperimentRun::codebook_objective(const TrainSettings& settings) {
  const Params& stage = spec_.stages.at("codebook");
  const double task_weight = stage.get_float("task_weight");
  const double codebook_weight = stage.get_float("codebook_weight");
  return [=, backbone = model_.backbone, quantizer = model_.quantizer](const Batch& batch) {
    Quantized q = quantizer->quantize(batch.images);
    return task_weight * cross_entropy(backbone->classify(q.quantized), batch, settings.label_smoothing) +
           codebook_weight * q.loss;
  };
}

absl::Status ExperimentRun::build_quantizer() {
  reseed(1);
  PQ_ASSIGN_OR_RETURN(model_.quantizer,
                      registry_.quantizers.build(spec_.quantizer.type, spec_.quantizer.params, context_));
  model_.quantizer->to(context_.device);
  return absl::OkStatus();
}

// Stage 1: the codebook, learned through the frozen original head.
absl::Status ExperimentRun::codebook() {
  if (!has_quantizer()) return absl::OkStatus();
  PQ_RETURN_IF_ERROR(build_quantizer());
  auto quantizer = model_.quantizer;
  const fs::path saved = run_dir_ / "model" / "quantizer.pt";
  PQ_ASSIGN_OR_RETURN(const Outcome outcome, run_stage("codebook", {{"quantizer.pt", saved}}, [&]() -> absl::StatusOr<nlohmann::json> {
    const TrainSettings settings = TrainSettings::from(spec_.stages.at("codebook"));
    TrainOptions options = train_options("codebook", {quantizer});
    PQ_ASSIGN_OR_RETURN(TensorSource* train_set, train_features());
    PQ_ASSIGN_OR_RETURN(TensorSource* validation, validation_features());
    if (!fs::exists(options.checkpoint)) {
      // Data-dependent inits (k-means) see a fixed sample of real feature vectors.
      auto generator = at::detail::createCPUGenerator(context_.seed + 17);
      const auto& f = train_set->inputs();
      const int64_t images = std::min<int64_t>(f.size(0), std::max<int64_t>(1, 65536 / (f.size(2) * f.size(3))));
      const auto pick = torch::randperm(f.size(0), generator, torch::kInt64).slice(0, 0, images).to(f.device());
      const auto sample = f.index_select(0, pick).permute({0, 2, 3, 1}).reshape({-1, f.size(1)}).to(torch::kFloat32);
      PQ_RETURN_IF_ERROR(guard("initialising the codebook", [&] { return quantizer->initialize(sample); }));
    }
    options.validate = [&] { return quantized_accuracy(*validation); };
    quantizer->train();
    std::vector<torch::Tensor> trainable;
    if (quantizer->learns_by_gradient()) trainable = quantizer->parameters();
    PQ_ASSIGN_OR_RETURN(auto summary, train(settings, trainable, *train_set, codebook_objective(settings), options));
    freeze(*quantizer);
    PQ_RETURN_IF_ERROR(save_if_writer(*quantizer, saved));
    nlohmann::json record = training_record(summary);
    PQ_ASSIGN_OR_RETURN(record["usage"], measure_usage());
    return record;
  }, [&] { return read_training_features(); }));
  if (outcome.reused) PQ_RETURN_IF_ERROR(load_module(*quantizer, saved));
  freeze(*quantizer);
  report_usage(outcome.record);
  return absl::OkStatus();
}

// Stage 2 (optional): remove the least-used codes in `steps` steps down to `target` per codebook,
// re-measuring usage on the validation split and briefly re-training between steps.
absl::Status ExperimentRun::prune() {
  const Params& stage = spec_.stages.at("prune");
  const int64_t target = stage.get_int("target");
  if (target == 0 || !has_quantizer()) return absl::OkStatus();
  auto quantizer = model_.quantizer;
  const fs::path saved = run_dir_ / "model" / "quantizer_pruned.pt";
  const int64_t initial = quantizer->num_codes();
  PQ_ASSIGN_OR_RETURN(const Outcome outcome, run_stage("prune", {{"quantizer.pt", saved}}, [&]() -> absl::StatusOr<nlohmann::json> {
    if (target >= initial) {
      if (is_writer()) fmt::print(stderr, "[prune] target {} >= K = {}: nothing to prune\n", target, initial);
      PQ_RETURN_IF_ERROR(save_if_writer(*quantizer, saved));
      nlohmann::json record = {{"codes", initial}, {"from", initial}, {"steps", nlohmann::json::array()}};
      PQ_ASSIGN_OR_RETURN(record["usage"], measure_usage());
      return record;
    }
    const TrainSettings settings = TrainSettings::from(stage);
    const int64_t steps = stage.get_int("steps");
    PQ_ASSIGN_OR_RETURN(TensorSource* train_set, train_features());
    PQ_ASSIGN_OR_RETURN(TensorSource* validation, validation_features());
    nlohmann::json history = nlohmann::json::array();
    for (int64_t s = 1; s <= steps; ++s) {
      // Usage on the validation split decides which codes go.
      quantizer->reset_usage();
      PQ_ASSIGN_OR_RETURN(const double before, quantized_accuracy(*validation));
      if (validation->size() >= collectives().world_size()) quantizer->all_reduce_usage();  // each rank counted its share
      const UsageStats usage = quantizer->usage();
      const auto counts = torch::tensor(usage.counts, torch::kInt64).view({usage.codebooks, -1});
      const int64_t size = initial - (initial - target) * s / steps;
      PQ_RETURN_IF_ERROR(quantizer->keep_codes(most_used_codes(counts, size)));
      for (auto& p : quantizer->parameters()) p.set_requires_grad(true);
      quantizer->train();
      std::vector<torch::Tensor> trainable;
      if (quantizer->learns_by_gradient()) trainable = quantizer->parameters();
      TrainOptions options = train_options("prune", {quantizer});
      options.label = fmt::format("prune step {}/{}", s, steps);
      options.checkpoint.clear();  // a pruning step is short: an interrupted stage 2 reruns whole
      options.seed = context_.seed + static_cast<uint64_t>(s);
      PQ_ASSIGN_OR_RETURN(auto summary, train(settings, trainable, *train_set, codebook_objective(settings), options));
      PQ_ASSIGN_OR_RETURN(const double after, quantized_accuracy(*validation));
      if (is_writer()) fmt::print(stderr, "[prune] step {}/{}: K {} -> {}, g(Zq) validation accuracy {:.4f} -> {:.4f}\n", s, steps,
                 s == 1 ? initial : history.back()["codes"].get<int64_t>(), size, before, after);
      history.push_back({{"codes", size}, {"accuracy_before", before}, {"accuracy_after", after},
                         {"loss", summary.last_epoch_loss}});
    }
    freeze(*quantizer);
    PQ_RETURN_IF_ERROR(save_if_writer(*quantizer, saved));
    nlohmann::json record = {{"codes", target}, {"from", initial}, {"steps", history}};
    PQ_ASSIGN_OR_RETURN(record["usage"], measure_usage());
    return record;
  }, [&] { return read_training_features(); }));
  if (outcome.reused) {
    const int64_t codebooks = quantizer->usage().codebooks;
    const int64_t kept = outcome.record["codes"].get<int64_t>();
    if (kept < initial) {
      PQ_RETURN_IF_ERROR(quantizer->keep_codes(torch::arange(kept, torch::kInt64).repeat({codebooks, 1})));
    }
    PQ_RETURN_IF_ERROR(load_module(*quantizer, saved));
  }
  freeze(*quantizer);
  report_usage(outcome.record);
  return absl::OkStatus();
}

absl::Status ExperimentRun::build_head() {
  reseed(3);
  if (model_.quantizer) {
    context_.prototypes = model_.quantizer->codebook().detach().clone();
    context_.prototype_groups = model_.quantizer->subspaces();
  }
  PQ_ASSIGN_OR_RETURN(model_.head, registry_.heads.build(spec_.head.type, spec_.head.params, context_));
  model_.head->to(context_.device);
  return absl::OkStatus();
}

// Stage 3: the interpretable head, its prototypes starting from the codewords.
absl::Status ExperimentRun::head() {
  PQ_RETURN_IF_ERROR(build_head());
  auto head = model_.head;
  const fs::path saved = run_dir_ / "model" / "head.pt";
  PQ_ASSIGN_OR_RETURN(const Outcome outcome, run_stage("head", {{"head.pt", saved}}, [&]() -> absl::StatusOr<nlohmann::json> {
    const TrainSettings settings = TrainSettings::from(spec_.stages.at("head"));
    PQ_ASSIGN_OR_RETURN(TensorSource* train_set, train_features());
    PQ_ASSIGN_OR_RETURN(TensorSource* validation, validation_features());
    head->train();
    std::vector<torch::Tensor> trainable;
    for (auto& p : head->parameters()) {
      if (p.requires_grad()) trainable.push_back(p);
    }
    TrainOptions options = train_options("head", {head});
    options.validate = [&] { return head_accuracy(*validation); };
    // Mixup/CutMix mix in the batch's dtype: 16-bit features then go in widened, as for any head.
    TensorSource features = head->reads_16bit_features() && !mixing_enabled(settings) ? train_set->in_stored_dtype()
                                                                                       : *train_set;
    PQ_ASSIGN_OR_RETURN(auto summary, train(settings, trainable, features,
                                            [&](const Batch& batch) {
                                              auto loss = cross_entropy(head->forward(batch.images).logits, batch,
                                                                        settings.label_smoothing);
                                              if (auto reg = head->regularization(); reg.defined()) loss = loss + reg;
                                              return loss;
                                            },
                                            options));
    head->eval();
    PQ_RETURN_IF_ERROR(save_if_writer(*head, saved));
    return training_record(summary);
  }, [&] { return read_training_features(); }));
  if (outcome.reused) PQ_RETURN_IF_ERROR(load_module(*head, saved));
  head->eval();
  return absl::OkStatus();
}

// Stage 5: every metric instance is a stage of its own. The instances not filed yet share one
// evaluation pass (evaluation_pass.h); a filed one costs nothing.
absl::StatusOr<std::map<std::string, nlohmann::json>> ExperimentRun::compute_metrics(const std::vector<size_t>& which) {
  std::vector<std::shared_ptr<Metric>> metrics;
  std::vector<Metric*> pointers;
  for (size_t i : which) {
    const ComponentSpec& metric_spec = spec_.metrics[i];
    PQ_ASSIGN_OR_RETURN(auto metric, registry_.metrics.build(metric_spec.type, metric_spec.params, context_));
    if (settings_.dump) metric->dump_to(settings_.dump->scoped(metric_instances_[i]));
    metrics.push_back(metric);
    pointers.push_back(metric.get());
  }
  if (settings_.dump) {
    metrics.push_back(make_input_dump(*settings_.dump, dataset_->info().has_parts));
    pointers.push_back(metrics.back().get());
  }
  PQ_ASSIGN_OR_RETURN(TensorSource* features, eval_features());
  model_.head->eval();
  model_.backbone->eval();
  const EvalContext context =
      make_eval_context(model_, dataset_->info(), eval_split_, train_split_, *features, dataset_->size(eval_split_),
                        dataset_->size(train_split_), context_.device);
  EvaluationSources sources;
  sources.dataset = dataset_.get();
  sources.eval_features = features;
  sources.train_features = [this] { return train_features(); };
  sources.batch_size = spec_.stages.at("head").get_int("eval_batch_size");
  if (!settings_.dump) {
    // Data-parallel: the ranks share the pass; rank 0 merges their states and computes.
    sources.fresh_metric = [&](size_t j) -> absl::StatusOr<std::shared_ptr<Metric>> {
      const ComponentSpec& metric_spec = spec_.metrics[which[j]];
      return registry_.metrics.build(metric_spec.type, metric_spec.params, context_);
    };
  }
  const auto pass_start = Clock::now();
  PQ_RETURN_IF_ERROR(run_evaluation_pass(context, sources, pointers));
  nlohmann::json pass = {{"seconds", seconds_since(pass_start)}, {"metrics", nlohmann::json::array()}};
  for (size_t i : which) pass["metrics"].push_back(metric_instances_[i]);
  if (is_writer()) fmt::print(stderr, "[evaluate] {} metric(s) in one pass: {:.1f} s\n", which.size(), pass["seconds"].get<double>());
  std::map<std::string, nlohmann::json> out;
  for (size_t j = 0; j < which.size(); ++j) {
    const std::string& instance = metric_instances_[which[j]];
    if (!is_writer()) {
      // Only rank 0's metrics hold the whole pass; the others read its record (run_stage).
      out[instance] = nlohmann::json{{"type", spec_.metrics[which[j]].type}, {"values", nlohmann::json::object()},
                                     {"settings", nlohmann::json::object()}, {"pass", pass}};
      continue;
    }
    PQ_ASSIGN_OR_RETURN(nlohmann::json values, guard(fmt::format("metric '{}'", instance), [&] { return metrics[j]->compute(); }));
    out[instance] = nlohmann::json{{"type", spec_.metrics[which[j]].type},
                                   {"values", values["values"]},
                                   {"settings", values.value("settings", nlohmann::json::object())},
                                   {"pass", pass}};
    // Values per prototype (purity's), kept in the stage record for the gallery and the report.
    if (values.contains("per_prototype")) out[instance]["per_prototype"] = values["per_prototype"];
  }
  return out;
}

absl::Status ExperimentRun::evaluate() {
  const auto start = Clock::now();
  if (metric_instances_.empty()) metric_instances_ = metric_instance_names(spec_.metrics);
  std::vector<size_t> pending;
  for (size_t i = 0; i < spec_.metrics.size(); ++i) {
    const std::string stage = "metric." + metric_instances_[i];
    // Rank 0's answer: every rank takes part in the same pass.
    const bool filed = rank0_decides(!forced(stage) && store_.contains(stage, keys_.at(stage).key));
    if (mode_ == RunMode::kRun && (!filed || settings_.dump)) pending.push_back(i);
  }
  std::map<std::string, nlohmann::json> computed;
  if (!pending.empty()) {
    PQ_RETURN_IF_ERROR(eval_features().status());
    PQ_ASSIGN_OR_RETURN(computed, compute_metrics(pending));
  }
  for (size_t i = 0; i < spec_.metrics.size(); ++i) {
    const std::string& instance = metric_instances_[i];
    PQ_ASSIGN_OR_RETURN(const Outcome outcome,
                        run_stage("metric." + instance, {}, [&]() -> absl::StatusOr<nlohmann::json> {
                          if (auto it = computed.find(instance); it != computed.end()) return it->second;
                          // Filed when the pass was planned, gone since: this metric alone.
                          PQ_ASSIGN_OR_RETURN(auto alone, compute_metrics({i}));
                          return alone.at(instance);
                        }, [&] { return eval_features().status(); }));
    results_["metrics"][instance] = outcome.record["values"];
    results_["metric_settings"][instance] = outcome.record["settings"];
  }
  const ModelSize size = model_size(model_.head->class_weights());
  results_["metrics"]["model_size"] = {
      {"local_size", size.local_size}, {"global_size", size.global_size}, {"weight_sparsity", size.sparsity}};
  if (is_writer()) PQ_RETURN_IF_ERROR(export_model(model_, spec_.resolved, run_dir_ / "model" / "protoquant.pt"));
  results_["stages"]["evaluate"] = {{"seconds", seconds_since(start)}};
  results_["manifest"] = spec_.resolved;
  return absl::OkStatus();
}

}  // namespace protoquant
