// The built-in stages, in a run's order (ExperimentRun::compose()):
//   blackbox (0) -> features -> codebook (1) -> prune (2) -> head (3) -> limit (4)
//   -> metric.<instance> (5) -> report
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "stages/stage.h"

namespace protoquant {

std::unique_ptr<Stage> blackbox_stage();
std::unique_ptr<Stage> features_stage();
std::unique_ptr<Stage> codebook_stage();
std::unique_ptr<Stage> prune_stage();
std::unique_ptr<Stage> head_stage();
std::unique_ptr<Stage> limit_stage();

// The metric instances of a run share one evaluation pass (evaluation_pass.h): the instances
// not filed yet are computed together; a filed one costs nothing.
class MetricPass;
std::shared_ptr<MetricPass> metric_pass();
// Computes spec.metrics[i] for every i in `which` in one pass (each instance's stage then files
// its value); a metric the pass did not cover is computed alone when its stage asks.
absl::Status run_metric_pass(RunState& run, MetricPass& pass, const std::vector<size_t>& which);
std::unique_ptr<Stage> metric_stage(size_t index, std::string instance, std::shared_ptr<MetricPass> pass);

// The run report's figures (report.h), drawn by `draw` when not filed: report/figures.json.
class ReportStage : public Stage {
 public:
  using Draw = std::function<absl::StatusOr<nlohmann::json>()>;
  std::string name() const override { return "report"; }
  absl::StatusOr<nlohmann::json> key_inputs(const RunState& run) const override;
  std::map<std::string, std::filesystem::path> outputs(const RunState& run) const override;
  absl::StatusOr<nlohmann::json> compute(RunState& run) override;

  void set_draw(Draw draw) { draw_ = std::move(draw), drawn_.reset(); }
  // The figures computed in this process, if they were (otherwise reused: read outputs()).
  const std::optional<nlohmann::json>& drawn() const { return drawn_; }

 private:
  Draw draw_;
  std::optional<nlohmann::json> drawn_;
};

}  // namespace protoquant
