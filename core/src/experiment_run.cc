#include "protoquant/experiment_run.h"

#include <chrono>
#include <fstream>
#include <thread>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "protoquant/atomic_file.h"
#include "protoquant/batch_mixing.h"
#include "protoquant/classification.h"
#include "protoquant/cpu_info.h"
#include "protoquant/feature_cache.h"
#include "protoquant/manifest.h"
#include "protoquant/metric.h"
#include "protoquant/model_export.h"
#include "protoquant/model_size.h"
#include "protoquant/process.h"
#include "protoquant/status.h"

namespace protoquant {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void freeze(torch::nn::Module& module) {
  module.eval();
  for (auto& p : module.parameters()) p.set_requires_grad(false);
}

absl::StatusOr<nlohmann::json> read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(fmt::format("{}: cannot open", path.string()));
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::DataLossError(fmt::format("{}: not valid JSON", path.string()));
  return j;
}

// What a training stage reports (best_epoch is 1-based, 0 when not validated).
nlohmann::json training_record(const TrainSummary& summary) {
  return {{"steps", summary.steps},
          {"loss", summary.last_epoch_loss},
          {"validation", summary.validation},
          {"train_seconds", summary.seconds},
          {"data_seconds", summary.data_seconds},
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
  std::vector<torch::Tensor> labels;
  auto logits = map_batches(data, batch_size, device,
                            [&](const Batch& b) {
                              labels.push_back(b.labels);
                              return logits_of(b);
                            },
                            label);
  module.train(was_training);
  if (!logits.ok()) return logits.status();
  return accuracy_of(*logits, torch::cat(labels));
}

}  // namespace

ExperimentRun::ExperimentRun(const ExperimentSpec& spec, Registry& registry, fs::path run_dir, RunMode mode)
    : spec_(spec), registry_(registry), run_dir_(std::move(run_dir)), mode_(mode) {}

std::optional<nlohmann::json> ExperimentRun::finished(const std::string& stage) const {
  if (mode_ == RunMode::kFresh) return std::nullopt;
  auto record = read_json(run_dir_ / "stages" / (stage + ".json"));
  if (!record.ok()) return std::nullopt;
  if (mode_ == RunMode::kResume) fmt::print(stderr, "[{}] finished in an earlier session: loaded\n", stage);
  return *record;
}

absl::Status ExperimentRun::not_recorded(const std::string& stage) const {
  return absl::FailedPreconditionError(
      fmt::format("{}: the run has no finished '{}' stage (run or resume it first)", run_dir_.string(), stage));
}

absl::Status ExperimentRun::finish(const std::string& stage, double seconds, nlohmann::json record) {
  record["seconds"] = seconds;
  results_["stages"][stage] = record;
  fmt::print(stderr, "[{}] done in {:.1f} s\n", stage, seconds);
  return write_file_atomic(run_dir_ / "stages" / (stage + ".json"), record.dump(2) + "\n");
}

// Every stage builds its components from its own seed, so what it builds does not depend on
// whether the stages before it were trained in this process or loaded by --resume.
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
  options.checkpoint = run_dir_ / "checkpoints" / (stage + ".pt");
  options.resume = mode_ == RunMode::kResume;
  options.num_classes = context_.num_classes;
  return options;
}

absl::Status ExperimentRun::prepare_folder() {
  std::error_code ec;
  fs::create_directories(run_dir_ / "stages", ec);
  if (ec) return absl::InternalError(fmt::format("{}: cannot create run folder: {}", run_dir_.string(), ec.message()));
  const fs::path guard_file = run_dir_ / "stages" / "manifest.json";
  if (mode_ == RunMode::kOpen) {
    if (!fs::exists(guard_file)) return absl::NotFoundError(fmt::format("{}: not a run folder", run_dir_.string()));
    return absl::OkStatus();
  }
  if (mode_ == RunMode::kResume) {
    auto recorded = read_json(guard_file);
    if (!recorded.ok()) {
      return absl::FailedPreconditionError(
          fmt::format("{}: nothing to resume (no stages/manifest.json from an earlier run)", run_dir_.string()));
    }
    if (*recorded != spec_.resolved) {
      return absl::FailedPreconditionError(fmt::format(
          "{}: the manifest differs from the one this run started with; resume only continues the same experiment",
          guard_file.string()));
    }
    // A results.json exists only when the earlier run finished; resuming makes a fresh one.
    fs::remove(run_dir_ / "results.json", ec);
    return absl::OkStatus();
  }
  // A fresh run: nothing from an earlier run in this folder may pass for this run's.
  fs::remove(run_dir_ / "results.json", ec);
  fs::remove_all(run_dir_ / "stages", ec);
  fs::remove_all(run_dir_ / "checkpoints", ec);
  fs::remove_all(run_dir_ / "edits", ec);
  PQ_RETURN_IF_ERROR(write_file_atomic(guard_file, spec_.resolved.dump(2) + "\n"));
  return write_file_atomic(run_dir_ / "manifest.toml", resolved_manifest_toml(spec_.resolved));
}

absl::Status ExperimentRun::train_stages() {
  const Params& exp = spec_.experiment;
  const int64_t threads = resolve_threads(exp.get_int("threads"));
  torch::set_num_threads(static_cast<int>(threads));
  context_.seed = static_cast<uint64_t>(exp.get_int("seed"));
  torch::manual_seed(context_.seed);
  context_.device = torch::Device(exp.get_string("device") == "cuda" ? torch::kCUDA : torch::kCPU);
  if (context_.device.is_cuda() && !torch::cuda::is_available()) {
    return absl::FailedPreconditionError("experiment.device = \"cuda\" but this LibTorch sees no CUDA device");
  }
  context_.base_dir = spec_.base_dir.string();
  train_split_ = exp.get_string("train_split");
  eval_split_ = exp.get_string("eval_split");
  validation_split_ = exp.get_string("validation_split").empty() ? eval_split_ : exp.get_string("validation_split");

  results_["experiment"] = exp.get_string("name");
  results_["run_dir"] = fs::absolute(run_dir_).string();
  results_["environment"] = {{"threads", threads},
                             {"device", context_.device.str()},
                             {"torch", TORCH_VERSION},
                             {"hardware_threads", std::thread::hardware_concurrency()},
                             {"cpu", cpu_info().describe()},
                             {"cpu_model", cpu_info().model},
                             {"cpu_features", cpu_info().features}};
  PQ_RETURN_IF_ERROR(prepare_folder());
  PQ_RETURN_IF_ERROR(load_dataset());
  PQ_RETURN_IF_ERROR(blackbox());
  PQ_RETURN_IF_ERROR(extract_features());
  PQ_RETURN_IF_ERROR(codebook());
  PQ_RETURN_IF_ERROR(prune());
  return head();
}

absl::Status ExperimentRun::load_dataset() {
  const auto start = Clock::now();
  PQ_ASSIGN_OR_RETURN(dataset_, registry_.datasets.build(spec_.dataset.type, spec_.dataset.params, context_));
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
  const auto start = Clock::now();
  reseed(0);
  PQ_ASSIGN_OR_RETURN(model_.backbone, registry_.backbones.build(spec_.backbone.type, spec_.backbone.params, context_));
  model_.backbone->to(context_.device);
  context_.feature_channels = model_.backbone->channels();
  const fs::path saved = run_dir_ / "model" / "backbone.pt";
  if (auto record = finished("blackbox")) {
    PQ_RETURN_IF_ERROR(load_module(*model_.backbone, saved));
    model_.backbone->to(context_.device);
    freeze(*model_.backbone);
    results_["stages"]["blackbox"] = *record;
    return absl::OkStatus();
  }
  if (mode_ == RunMode::kOpen) return not_recorded("blackbox");
  const Params& stage = spec_.stages.at("blackbox");
  const TrainSettings settings = TrainSettings::from(stage);
  const std::string weights = stage.get_string("weights");
  nlohmann::json record = {{"weights", weights}};
  if (!weights.empty()) {
    // A black box brought by the user (or an earlier run): loaded, not trained.
    PQ_RETURN_IF_ERROR(load_module(*model_.backbone, weights));
    model_.backbone->to(context_.device);
  } else {
    auto backbone = model_.backbone;
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
  freeze(*model_.backbone);
  PQ_RETURN_IF_ERROR(save_module(*model_.backbone, saved));
  return finish("blackbox", seconds_since(start), record);
}

// The backbone is frozen from here on: every feature map is computed once, or read from the
// shared feature cache when an earlier run computed it with the same weights and data.
absl::Status ExperimentRun::extract_features() {
  const auto start = Clock::now();
  const Params& exp = spec_.experiment;
  const int64_t batch_size = spec_.stages.at("blackbox").get_int("eval_batch_size");
  const auto dtype = feature_dtype(exp.get_string("feature_dtype"));
  std::optional<FeatureCache> cache;
  if (!exp.get_string("feature_cache").empty()) cache.emplace(exp.get_string("feature_cache"));
  const uint32_t weights = cache ? weights_checksum(*model_.backbone) : 0;
  nlohmann::json record;
  auto extract = [&](const std::string& split) -> absl::StatusOr<std::unique_ptr<TensorSource>> {
    const std::string key = fmt::format("backbone={} weights={:08x} channels={}|dataset={}|split={}|dtype={}",
                                        spec_.backbone.type, weights, context_.feature_channels,
                                        dataset_->identity(), split, exp.get_string("feature_dtype"));
    // Seconds per split and where the features came from: what the cache saves, per pass.
    const auto split_start = Clock::now();
    if (cache) {
      if (auto hit = cache->load(key)) {
        fmt::print(stderr, "[features] {}: from the cache ({})\n", split, cache->path_for(key).string());
        record["cache"][split] = {{"hit", true}, {"file", cache->path_for(key).string()}};
        record["splits"][split] = {{"from", "cache"}, {"seconds", seconds_since(split_start)}};
        return std::make_unique<TensorSource>(hit->features, hit->labels);
      }
    }
    DatasetSource source(*dataset_, split, /*augment=*/false);  // features of un-augmented images
    std::vector<torch::Tensor> label_parts;
    PQ_ASSIGN_OR_RETURN(torch::Tensor features,
                        map_batches(source, batch_size, context_.device,
                                    [&](const Batch& batch) {
                                      label_parts.push_back(batch.labels);
                                      return model_.backbone->features(batch.images).to(dtype);
                                    },
                                    fmt::format("features {}", split)));
    torch::Tensor labels = torch::cat(label_parts);
    record["splits"][split] = {{"from", "backbone"}, {"seconds", seconds_since(split_start)}};
    if (cache) {
      PQ_RETURN_IF_ERROR(cache->store(key, features, labels));
      record["cache"][split] = {{"hit", false}, {"file", cache->path_for(key).string()}};
    }
    return std::make_unique<TensorSource>(features, labels);
  };
  // An opened run trains nothing: it needs the evaluation features only.
  if (mode_ != RunMode::kOpen) {
    PQ_ASSIGN_OR_RETURN(train_features_, extract(train_split_));
  }
  PQ_ASSIGN_OR_RETURN(eval_features_, extract(eval_split_));
  validation_features_ = eval_features_.get();
  if (validation_split_ != eval_split_) {
    PQ_ASSIGN_OR_RETURN(separate_validation_features_, extract(validation_split_));
    validation_features_ = separate_validation_features_.get();
  }
  const auto& f = (train_features_ ? train_features_ : eval_features_)->inputs();
  record["shape"] = std::vector<int64_t>(f.sizes().begin() + 1, f.sizes().end());
  record["dtype"] = exp.get_string("feature_dtype");
  record["bytes_per_image"] = f.numel() / std::max<int64_t>(1, f.size(0)) * f.element_size();
  record["seconds"] = seconds_since(start);
  results_["stages"]["features"] = record;
  return absl::OkStatus();
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

// Usage over the whole evaluation split, and how well g classifies quantized maps.
absl::Status ExperimentRun::measure_usage() {
  if (mode_ == RunMode::kOpen) return absl::OkStatus();  // an opened run reports nothing
  model_.quantizer->reset_usage();
  PQ_ASSIGN_OR_RETURN(const double accuracy, quantized_accuracy(*eval_features_));
  const auto usage = model_.quantizer->usage();
  results_["metrics"]["quantized_blackbox_accuracy"] = accuracy;
  results_["metrics"]["codebook"] = usage.to_json(false);
  results_["codebook_counts"] = usage.counts;
  fmt::print(stderr, "[codebook] {} of {} codes used on {}, perplexity {:.1f}, g(Zq) accuracy {:.4f}\n", usage.used,
             usage.codebooks * usage.codes_per_codebook, eval_split_, usage.mean_perplexity, accuracy);
  return absl::OkStatus();
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

// Stage 1: the codebook, learned through the frozen original head.
absl::Status ExperimentRun::codebook() {
  const auto start = Clock::now();
  reseed(1);
  PQ_ASSIGN_OR_RETURN(model_.quantizer,
                      registry_.quantizers.build(spec_.quantizer.type, spec_.quantizer.params, context_));
  model_.quantizer->to(context_.device);
  auto quantizer = model_.quantizer;
  if (auto record = finished("codebook")) {
    PQ_RETURN_IF_ERROR(load_module(*quantizer, run_dir_ / "model" / "quantizer.pt"));
    freeze(*quantizer);
    results_["stages"]["codebook"] = *record;
    return absl::OkStatus();
  }
  const Params& stage = spec_.stages.at("codebook");
  const TrainSettings settings = TrainSettings::from(stage);
  TrainOptions options = train_options("codebook", {quantizer});
  if (mode_ == RunMode::kOpen) return not_recorded("codebook");
  if (!(options.resume && fs::exists(options.checkpoint))) {
    // Data-dependent inits (k-means) see a fixed sample of real feature vectors.
    auto generator = at::detail::createCPUGenerator(context_.seed + 17);
    const auto& f = train_features_->inputs();
    const int64_t images = std::min<int64_t>(f.size(0), std::max<int64_t>(1, 65536 / (f.size(2) * f.size(3))));
    const auto pick = torch::randperm(f.size(0), generator, torch::kInt64).slice(0, 0, images).to(f.device());
    const auto sample = f.index_select(0, pick).permute({0, 2, 3, 1}).reshape({-1, f.size(1)}).to(torch::kFloat32);
    PQ_RETURN_IF_ERROR(guard("initialising the codebook", [&] { return quantizer->initialize(sample); }));
  }
  options.validate = [&] { return quantized_accuracy(*validation_features_); };
  quantizer->train();
  std::vector<torch::Tensor> trainable;
  if (quantizer->learns_by_gradient()) trainable = quantizer->parameters();
  PQ_ASSIGN_OR_RETURN(auto summary,
                      train(settings, trainable, *train_features_, codebook_objective(settings), options));
  freeze(*quantizer);
  PQ_RETURN_IF_ERROR(save_module(*quantizer, run_dir_ / "model" / "quantizer.pt"));
  return finish("codebook", seconds_since(start),
                training_record(summary));
}

// Stage 2 (optional): remove the least-used codes in `steps` steps down to `target` per codebook,
// re-measuring usage on the validation split and briefly re-training between steps.
absl::Status ExperimentRun::prune() {
  const Params& stage = spec_.stages.at("prune");
  const int64_t target = stage.get_int("target");
  auto quantizer = model_.quantizer;
  const fs::path saved = run_dir_ / "model" / "quantizer_pruned.pt";
  if (target == 0 || target >= quantizer->num_codes()) {
    if (target != 0) fmt::print(stderr, "[prune] target {} >= K = {}: nothing to prune\n", target, quantizer->num_codes());
    return measure_usage();
  }
  const auto start = Clock::now();
  if (auto record = finished("prune")) {
    const int64_t codebooks = quantizer->usage().codebooks;
    const int64_t kept = (*record)["codes"].get<int64_t>();
    PQ_RETURN_IF_ERROR(quantizer->keep_codes(torch::arange(kept, torch::kInt64).repeat({codebooks, 1})));
    PQ_RETURN_IF_ERROR(load_module(*quantizer, saved));
    freeze(*quantizer);
    results_["stages"]["prune"] = *record;
    return measure_usage();
  }
  if (mode_ == RunMode::kOpen) return not_recorded("prune");
  const TrainSettings settings = TrainSettings::from(stage);
  const int64_t steps = stage.get_int("steps");
  const int64_t initial = quantizer->num_codes();
  nlohmann::json history = nlohmann::json::array();
  for (int64_t s = 1; s <= steps; ++s) {
    // Usage on the validation split decides which codes go.
    quantizer->reset_usage();
    PQ_ASSIGN_OR_RETURN(const double before, quantized_accuracy(*validation_features_));
    const UsageStats usage = quantizer->usage();
    const auto counts = torch::tensor(usage.counts, torch::kInt64).view({usage.codebooks, -1});
    const int64_t size = initial - (initial - target) * s / steps;
    PQ_RETURN_IF_ERROR(quantizer->keep_codes(most_used_codes(counts, size)));
    for (auto& p : quantizer->parameters()) p.set_requires_grad(true);
    quantizer->train();
    std::vector<torch::Tensor> trainable;
    if (quantizer->learns_by_gradient()) trainable = quantizer->parameters();
    TrainOptions options = train_options(fmt::format("prune step {}/{}", s, steps), {quantizer});
    options.checkpoint.clear();  // a pruning step is short: an interrupted stage 2 reruns whole
    options.seed = context_.seed + static_cast<uint64_t>(s);
    PQ_ASSIGN_OR_RETURN(auto summary,
                        train(settings, trainable, *train_features_, codebook_objective(settings), options));
    PQ_ASSIGN_OR_RETURN(const double after, quantized_accuracy(*validation_features_));
    fmt::print(stderr, "[prune] step {}/{}: K {} -> {}, g(Zq) validation accuracy {:.4f} -> {:.4f}\n", s, steps,
               s == 1 ? initial : history.back()["codes"].get<int64_t>(), size, before, after);
    history.push_back({{"codes", size}, {"accuracy_before", before}, {"accuracy_after", after},
                       {"loss", summary.last_epoch_loss}});
  }
  freeze(*quantizer);
  PQ_RETURN_IF_ERROR(save_module(*quantizer, saved));
  PQ_RETURN_IF_ERROR(finish("prune", seconds_since(start), {{"codes", target}, {"from", initial}, {"steps", history}}));
  return measure_usage();
}

absl::Status ExperimentRun::build_head() {
  reseed(3);
  context_.prototypes = model_.quantizer->codebook().detach().clone();
  context_.prototype_groups = model_.quantizer->subspaces();
  PQ_ASSIGN_OR_RETURN(model_.head, registry_.heads.build(spec_.head.type, spec_.head.params, context_));
  model_.head->to(context_.device);
  return absl::OkStatus();
}

// Stage 3: the interpretable head, its prototypes starting from the codewords.
absl::Status ExperimentRun::head() {
  const auto start = Clock::now();
  PQ_RETURN_IF_ERROR(build_head());
  auto head = model_.head;
  const fs::path saved = run_dir_ / "model" / "head.pt";
  if (auto record = finished("head")) {
    PQ_RETURN_IF_ERROR(load_module(*head, saved));
    head->eval();
    results_["stages"]["head"] = *record;
    return absl::OkStatus();
  }
  if (mode_ == RunMode::kOpen) return not_recorded("head");
  const TrainSettings settings = TrainSettings::from(spec_.stages.at("head"));
  head->train();
  std::vector<torch::Tensor> trainable;
  for (auto& p : head->parameters()) {
    if (p.requires_grad()) trainable.push_back(p);
  }
  TrainOptions options = train_options("head", {head});
  options.validate = [&] { return head_accuracy(*validation_features_); };
  // Mixup/CutMix mix in the batch's dtype: 16-bit features then go in widened, as for any head.
  TensorSource features = head->reads_16bit_features() && !mixing_enabled(settings)
                              ? train_features_->in_stored_dtype()
                              : *train_features_;
  PQ_ASSIGN_OR_RETURN(auto summary, train(settings, trainable, features,
                                          [&](const Batch& batch) {
                                            auto loss = cross_entropy(head->forward(batch.images).logits, batch,
                                                                      settings.label_smoothing);
                                            if (auto reg = head->regularization(); reg.defined()) loss = loss + reg;
                                            return loss;
                                          },
                                          options));
  head->eval();
  PQ_RETURN_IF_ERROR(save_module(*head, saved));
  return finish("head", seconds_since(start),
                training_record(summary));
}

absl::Status ExperimentRun::evaluate() {
  const auto start = Clock::now();
  const int64_t batch = spec_.stages.at("head").get_int("eval_batch_size");
  EvalContext eval;
  eval.split = eval_split_;
  eval.labels = eval_features_->labels();
  eval.model = &model_;
  eval.dataset = dataset_.get();
  eval.device = context_.device;
  eval.run_dir = run_dir_.string();
  PQ_ASSIGN_OR_RETURN(eval.logits, map_batches(*eval_features_, batch, context_.device,
                                               [&](const Batch& b) { return model_.head->forward(b.images).logits; },
                                               "evaluate head"));
  PQ_ASSIGN_OR_RETURN(eval.blackbox_logits,
                      map_batches(*eval_features_, batch, context_.device,
                                  [&](const Batch& b) { return model_.backbone->classify(b.images); },
                                  "evaluate black box"));
  for (const auto& metric_spec : spec_.metrics) {
    PQ_ASSIGN_OR_RETURN(auto metric, registry_.metrics.build(metric_spec.type, metric_spec.params, context_));
    PQ_ASSIGN_OR_RETURN(nlohmann::json out,
                        guard(fmt::format("metric '{}'", metric_spec.type), [&] { return metric->evaluate(eval); }));
    for (const auto& [key, value] : out["values"].items()) results_["metrics"][key] = value;
    results_["metric_settings"][metric_spec.type] = out.value("settings", nlohmann::json::object());
  }
  const ModelSize size = model_size(model_.head->class_weights());
  results_["metrics"]["local_size"] = size.local_size;
  results_["metrics"]["global_size"] = size.global_size;
  results_["metrics"]["weight_sparsity"] = size.sparsity;
  PQ_RETURN_IF_ERROR(export_model(model_, spec_.resolved, run_dir_ / "model" / "protoquant.pt"));
  results_["stages"]["evaluate"] = {{"seconds", seconds_since(start)}};
  results_["manifest"] = spec_.resolved;
  return absl::OkStatus();
}

}  // namespace protoquant
