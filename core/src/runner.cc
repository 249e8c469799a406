#include "protoquant/runner.h"

#include <chrono>
#include <ctime>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "protoquant/atomic_file.h"
#include "protoquant/model.h"
#include "protoquant/status.h"
#include "protoquant/trainer.h"

namespace protoquant {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

fs::path default_run_dir(const ExperimentSpec& spec) {
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  return fs::path(spec.experiment.get_string("output")) / fmt::format("{}-{}", spec.experiment.get_string("name"), stamp);
}

void freeze(torch::nn::Module& module) {
  module.eval();
  for (auto& p : module.parameters()) p.set_requires_grad(false);
}

// Everything a run accumulates for results.json.
struct RunState {
  nlohmann::json results;
  void stage_done(const std::string& stage, Clock::time_point start, nlohmann::json extra = {}) {
    extra["seconds"] = seconds_since(start);
    results["stages"][stage] = std::move(extra);
    fmt::print(stderr, "[{}] done in {:.1f} s\n", stage, results["stages"][stage]["seconds"].get<double>());
  }
};

absl::StatusOr<nlohmann::json> run(const ExperimentSpec& spec, Registry& registry, const fs::path& run_dir) {
  const Params& exp = spec.experiment;
  const auto seed = static_cast<uint64_t>(exp.get_int("seed"));
  const int64_t threads = exp.get_int("threads") > 0 ? exp.get_int("threads")
                                                      : std::max<int64_t>(1, std::thread::hardware_concurrency());
  torch::set_num_threads(static_cast<int>(threads));
  torch::manual_seed(seed);
  const torch::Device device(exp.get_string("device") == "cuda" ? torch::kCUDA : torch::kCPU);
  if (device.is_cuda() && !torch::cuda::is_available()) {
    return absl::FailedPreconditionError("experiment.device = \"cuda\" but this LibTorch sees no CUDA device");
  }
  const std::string train_split = exp.get_string("train_split");
  const std::string eval_split = exp.get_string("eval_split");

  RunState state;
  state.results["experiment"] = exp.get_string("name");
  state.results["run_dir"] = fs::absolute(run_dir).string();
  state.results["environment"] = {{"threads", threads},
                                  {"device", device.str()},
                                  {"torch", TORCH_VERSION},
                                  {"hardware_threads", std::thread::hardware_concurrency()}};

  BuildContext context;
  context.seed = seed;
  context.device = device;
  context.base_dir = spec.base_dir.string();

  // Dataset.
  auto start = Clock::now();
  PQ_ASSIGN_OR_RETURN(std::shared_ptr<Dataset> dataset,
                      registry.datasets.build(spec.dataset.type, spec.dataset.params, context));
  const DatasetInfo& info = dataset->info();
  for (const auto& split : {train_split, eval_split}) {
    if (std::find(info.splits.begin(), info.splits.end(), split) == info.splits.end()) {
      return absl::InvalidArgumentError(fmt::format("dataset '{}' has no split '{}' (it has: {})", info.name, split,
                                                    fmt::join(info.splits, ", ")));
    }
  }
  context.num_classes = info.num_classes;
  context.image_channels = info.channels;
  context.image_height = info.height;
  context.image_width = info.width;
  state.stage_done("dataset", start, {{"train_samples", dataset->size(train_split)},
                                      {"eval_samples", dataset->size(eval_split)},
                                      {"classes", info.num_classes}});

  Model model;
  // Stage 0: the black-box classifier.
  start = Clock::now();
  PQ_ASSIGN_OR_RETURN(model.backbone, registry.backbones.build(spec.backbone.type, spec.backbone.params, context));
  model.backbone->to(device);
  {
    const Params& stage = spec.stages.at("blackbox");
    const TrainSettings settings = TrainSettings::from(stage);
    const std::string weights = stage.get_string("weights");
    TrainSummary summary;
    if (!weights.empty()) {
      // A black box brought by the user (or an earlier run): loaded, not trained.
      PQ_RETURN_IF_ERROR(load_module(*model.backbone, weights));
      model.backbone->to(device);
    } else {
      DatasetSource source(*dataset, train_split);
      model.backbone->train();
      auto backbone = model.backbone;
      PQ_ASSIGN_OR_RETURN(summary, train(settings, backbone->parameters(), source,
                                         [&](const Batch& batch) {
                                           return cross_entropy(backbone->forward(batch.images), batch.labels,
                                                                settings.label_smoothing);
                                         },
                                         {"blackbox", seed, device, nullptr}));
    }
    freeze(*model.backbone);
    PQ_RETURN_IF_ERROR(save_module(*model.backbone, run_dir / "model" / "backbone.pt"));
    state.stage_done("blackbox", start, {{"steps", summary.steps}, {"loss", summary.last_epoch_loss},
                                         {"weights", weights}});
  }
  context.feature_channels = model.backbone->channels();

  // The backbone is frozen from here on: compute every feature map once.
  start = Clock::now();
  const int64_t feature_batch = spec.stages.at("blackbox").get_int("eval_batch_size");
  auto extract = [&](const std::string& split) -> absl::StatusOr<std::unique_ptr<TensorSource>> {
    DatasetSource source(*dataset, split, /*augment=*/false);  // features of un-augmented images
    torch::Tensor labels;
    std::vector<torch::Tensor> label_parts;
    PQ_ASSIGN_OR_RETURN(torch::Tensor features,
                        map_batches(source, feature_batch, device,
                                    [&](const Batch& batch) {
                                      label_parts.push_back(batch.labels);
                                      return model.backbone->features(batch.images);
                                    },
                                    fmt::format("features {}", split)));
    return std::make_unique<TensorSource>(features, torch::cat(label_parts));
  };
  PQ_ASSIGN_OR_RETURN(auto train_features, extract(train_split));
  PQ_ASSIGN_OR_RETURN(auto eval_features, extract(eval_split));
  const auto& fshape = train_features->inputs().sizes();
  state.stage_done("features", start, {{"shape", std::vector<int64_t>(fshape.begin() + 1, fshape.end())}});

  // Stage 1: the codebook, learned through the frozen original head.
  start = Clock::now();
  PQ_ASSIGN_OR_RETURN(model.quantizer,
                      registry.quantizers.build(spec.quantizer.type, spec.quantizer.params, context));
  model.quantizer->to(device);
  {
    // Data-dependent inits (k-means) see a fixed sample of real feature vectors.
    auto generator = at::detail::createCPUGenerator(seed + 17);
    const auto& f = train_features->inputs();
    const int64_t images = std::min<int64_t>(f.size(0), std::max<int64_t>(1, 65536 / (f.size(2) * f.size(3))));
    const auto pick = torch::randperm(f.size(0), generator, torch::kInt64).slice(0, 0, images).to(f.device());
    const auto sample = f.index_select(0, pick).permute({0, 2, 3, 1}).reshape({-1, f.size(1)});
    PQ_RETURN_IF_ERROR(guard("initialising the codebook", [&] { return model.quantizer->initialize(sample); }));

    const Params& stage = spec.stages.at("codebook");
    const TrainSettings settings = TrainSettings::from(stage);
    const double task_weight = stage.get_float("task_weight");
    const double codebook_weight = stage.get_float("codebook_weight");
    auto backbone = model.backbone;
    auto quantizer = model.quantizer;
    quantizer->train();
    std::vector<torch::Tensor> trainable;
    if (quantizer->learns_by_gradient()) trainable = quantizer->parameters();
    PQ_ASSIGN_OR_RETURN(auto summary,
                        train(settings, trainable, *train_features,
                              [&](const Batch& batch) {
                                Quantized q = quantizer->quantize(batch.images);
                                auto logits = backbone->classify(q.quantized);
                                return task_weight * cross_entropy(logits, batch.labels, settings.label_smoothing) +
                                       codebook_weight * q.loss;
                              },
                              {"codebook", seed, device, nullptr}));
    // Usage over the whole evaluation split, and how well g classifies quantized maps.
    quantizer->eval();
    quantizer->reset_usage();
    PQ_ASSIGN_OR_RETURN(torch::Tensor quantized_logits,
                        map_batches(*eval_features, settings.eval_batch_size, device,
                                    [&](const Batch& batch) {
                                      return backbone->classify(quantizer->quantize(batch.images).quantized);
                                    },
                                    "codebook usage"));
    const auto usage = quantizer->usage();
    const double quantized_accuracy =
        quantized_logits.argmax(1).eq(eval_features->labels()).to(torch::kFloat64).mean().item<double>();
    state.results["metrics"]["quantized_blackbox_accuracy"] = quantized_accuracy;
    state.results["metrics"]["codebook"] = usage.to_json(false);
    state.results["codebook_counts"] = usage.counts;
    fmt::print(stderr, "[codebook] {} of {} codes used on {}, perplexity {:.1f}, g(Zq) accuracy {:.4f}\n",
               usage.used, usage.codebooks * usage.codes_per_codebook, eval_split, usage.mean_perplexity,
               quantized_accuracy);
    freeze(*model.quantizer);
    PQ_RETURN_IF_ERROR(save_module(*model.quantizer, run_dir / "model" / "quantizer.pt"));
    state.stage_done("codebook", start, {{"steps", summary.steps}, {"loss", summary.last_epoch_loss}});
  }

  // Stage 3: the interpretable head, its prototypes starting from the codewords.
  start = Clock::now();
  context.prototypes = model.quantizer->codebook().detach().clone();
  context.prototype_groups = model.quantizer->subspaces();
  PQ_ASSIGN_OR_RETURN(model.head, registry.heads.build(spec.head.type, spec.head.params, context));
  model.head->to(device);
  {
    const TrainSettings settings = TrainSettings::from(spec.stages.at("head"));
    auto head = model.head;
    head->train();
    std::vector<torch::Tensor> trainable;
    for (auto& p : head->parameters()) if (p.requires_grad()) trainable.push_back(p);
    PQ_ASSIGN_OR_RETURN(auto summary, train(settings, trainable, *train_features,
                                            [&](const Batch& batch) {
                                              auto loss = cross_entropy(head->forward(batch.images).logits,
                                                                        batch.labels, settings.label_smoothing);
                                              if (auto reg = head->regularization(); reg.defined()) loss = loss + reg;
                                              return loss;
                                            },
                                            {"head", seed, device, nullptr}));
    head->eval();
    PQ_RETURN_IF_ERROR(save_module(*model.head, run_dir / "model" / "head.pt"));
    state.stage_done("head", start, {{"steps", summary.steps}, {"loss", summary.last_epoch_loss}});
  }

  // Evaluation.
  start = Clock::now();
  {
    const int64_t batch = spec.stages.at("head").get_int("eval_batch_size");
    EvalContext eval;
    eval.split = eval_split;
    eval.labels = eval_features->labels();
    eval.model = &model;
    eval.dataset = dataset.get();
    eval.device = device;
    eval.run_dir = run_dir.string();
    PQ_ASSIGN_OR_RETURN(eval.logits, map_batches(*eval_features, batch, device,
                                                 [&](const Batch& b) { return model.head->forward(b.images).logits; },
                                                 "evaluate head"));
    PQ_ASSIGN_OR_RETURN(eval.blackbox_logits,
                        map_batches(*eval_features, batch, device,
                                    [&](const Batch& b) { return model.backbone->classify(b.images); },
                                    "evaluate black box"));
    for (const auto& metric_spec : spec.metrics) {
      PQ_ASSIGN_OR_RETURN(auto metric, registry.metrics.build(metric_spec.type, metric_spec.params, context));
      PQ_ASSIGN_OR_RETURN(nlohmann::json out,
                          guard(fmt::format("metric '{}'", metric_spec.type), [&] { return metric->evaluate(eval); }));
      for (const auto& [key, value] : out["values"].items()) state.results["metrics"][key] = value;
      state.results["metric_settings"][metric_spec.type] = out.value("settings", nlohmann::json::object());
    }
  }
  state.stage_done("evaluate", start);
  state.results["manifest"] = spec.resolved;
  return state.results;
}

}  // namespace

absl::StatusOr<nlohmann::json> run_experiment(const ExperimentSpec& spec, Registry& registry,
                                              const RunOptions& options) {
  const fs::path run_dir = options.out_dir.empty() ? default_run_dir(spec) : options.out_dir;
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  if (ec) return absl::InternalError(fmt::format("{}: cannot create run folder: {}", run_dir.string(), ec.message()));
  // A stale results.json from an earlier run in the same folder must not pass for this run's.
  fs::remove(run_dir / "results.json", ec);
  fmt::print(stderr, "run folder: {}\n", run_dir.string());
  const auto start = Clock::now();
  PQ_ASSIGN_OR_RETURN(nlohmann::json results,
                      guard("running the experiment", [&] { return run(spec, registry, run_dir); }));
  results["total_seconds"] = seconds_since(start);
  PQ_RETURN_IF_ERROR(write_file_atomic(run_dir / "results.json", results.dump(2) + "\n"));
  return results;
}

}  // namespace protoquant
