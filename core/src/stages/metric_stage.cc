// Stage 5: every metric instance is a stage of its own, keyed by the head and its own settings,
// so adding a metric to a finished run computes that metric alone. The instances not filed yet
// share one evaluation pass (evaluation_pass.h).
#include <fmt/format.h>

#include "protoquant/eval_dump.h"
#include "protoquant/evaluation_pass.h"
#include "protoquant/metric.h"
#include "protoquant/process_group.h"
#include "protoquant/status.h"
#include "stages/run_state.h"
#include "stages/stages.h"

namespace protoquant {

class MetricPass {
 public:
  std::map<size_t, nlohmann::json> values;  // by index in spec.metrics
};

std::shared_ptr<MetricPass> metric_pass() { return std::make_shared<MetricPass>(); }

absl::Status run_metric_pass(RunState& run, MetricPass& pass, const std::vector<size_t>& which) {
  if (which.empty()) return absl::OkStatus();
  const std::vector<std::string>& instances = run.metric_instances;
  std::vector<std::shared_ptr<Metric>> metrics;
  std::vector<Metric*> pointers;
  for (size_t i : which) {
    const ComponentSpec& spec = run.spec.metrics[i];
    PQ_ASSIGN_OR_RETURN(auto metric, run.registry.metrics.build(spec.type, spec.params, run.context));
    if (run.settings.dump) metric->dump_to(run.settings.dump->scoped(instances[i]));
    metrics.push_back(metric);
    pointers.push_back(metric.get());
  }
  if (run.settings.dump) {
    metrics.push_back(make_input_dump(*run.settings.dump, run.dataset->info().has_parts));
    pointers.push_back(metrics.back().get());
  }
  PQ_ASSIGN_OR_RETURN(TensorSource* features, run.eval_features());
  run.model.head->eval();
  run.model.backbone->eval();
  PQ_ASSIGN_OR_RETURN(ImageFeatures features_of, run.image_features());
  const EvalContext context =
      make_eval_context(run.model, *run.dataset, run.eval_split, run.train_split, *features,
                        run.dataset->size(run.eval_split), run.dataset->size(run.train_split), run.context.device,
                        std::move(features_of));
  EvaluationSources sources;
  sources.dataset = run.dataset.get();
  sources.eval_features = features;
  sources.train_features = [&run] { return run.train_features(); };
  sources.batch_size = run.spec.stages.at("head").get_int("eval_batch_size");
  if (!run.settings.dump) {
    // Data-parallel: the ranks share the pass; rank 0 merges their states and computes.
    sources.fresh_metric = [&](size_t j) -> absl::StatusOr<std::shared_ptr<Metric>> {
      const ComponentSpec& spec = run.spec.metrics[which[j]];
      return run.registry.metrics.build(spec.type, spec.params, run.context);
    };
  }
  const auto pass_start = Clock::now();
  PQ_RETURN_IF_ERROR(run_evaluation_pass(context, sources, pointers));
  nlohmann::json timing = {{"seconds", seconds_since(pass_start)}, {"metrics", nlohmann::json::array()}};
  for (size_t i : which) timing["metrics"].push_back(instances[i]);
  if (is_writer()) fmt::print(stderr, "[evaluate] {} metric(s) in one pass: {:.1f} s\n", which.size(), timing["seconds"].get<double>());
  for (size_t j = 0; j < which.size(); ++j) {
    const size_t i = which[j];
    const std::string instance = instances[i];
    nlohmann::json entry = {{"type", run.spec.metrics[i].type}, {"pass", timing}};
    if (!is_writer()) {
      // Only rank 0's metrics hold the whole pass; the others read its record (stage_runner.h).
      entry["values"] = nlohmann::json::object();
      entry["settings"] = nlohmann::json::object();
      pass.values[i] = entry;
      continue;
    }
    PQ_ASSIGN_OR_RETURN(nlohmann::json values, guard(fmt::format("metric '{}'", instance), [&] { return metrics[j]->compute(); }));
    entry["values"] = values["values"];
    entry["settings"] = values.value("settings", nlohmann::json::object());
    // Values per prototype (purity's), kept in the stage record for the gallery and the report.
    if (values.contains("per_prototype")) entry["per_prototype"] = values["per_prototype"];
    pass.values[i] = entry;
  }
  return absl::OkStatus();
}

namespace {

class MetricStage : public Stage {
 public:
  MetricStage(size_t index, std::string instance, std::shared_ptr<MetricPass> pass)
      : index_(index), instance_(std::move(instance)), pass_(std::move(pass)) {}

  std::string name() const override { return "metric." + instance_; }

  absl::StatusOr<nlohmann::json> key_inputs(const RunState& run) const override {
    return nlohmann::json{{"head", run.final_head_key()},
                          {"features", run.keys.at("features").key},
                          {"metric", run.component_identity(run.spec.metrics[index_])},
                          {"split", run.eval_split}};
  }

  absl::Status read_inputs(RunState& run) override { return run.eval_features().status(); }

  absl::StatusOr<nlohmann::json> compute(RunState& run) override {
    // Filed when the pass was planned, gone since: this metric alone.
    if (!pass_->values.count(index_)) PQ_RETURN_IF_ERROR(run_metric_pass(run, *pass_, {index_}));
    return pass_->values.at(index_);
  }

  absl::Status finish(RunState& run, const nlohmann::json& record) override {
    run.results["metrics"][instance_] = record["values"];
    run.results["metric_settings"][instance_] = record["settings"];
    return absl::OkStatus();
  }

 private:
  size_t index_;
  std::string instance_;
  std::shared_ptr<MetricPass> pass_;
};

}  // namespace

std::unique_ptr<Stage> metric_stage(size_t index, std::string instance, std::shared_ptr<MetricPass> pass) {
  return std::make_unique<MetricStage>(index, std::move(instance), std::move(pass));
}

}  // namespace protoquant
