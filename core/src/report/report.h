// The run report: report.html in the run folder, one self-contained page (images embedded as
// data URIs, charts as inline SVG, no script, no network) that shows what a run did and what its
// model learned: the metrics with their settings, each stage's seconds and whether it was reused,
// training curves, the codebook's usage, accuracy against k prototypes per class (limit-k
// editing, undone after), the prototype gallery, sample explanations and the resolved manifest.
// Written at the end of `protoquant run` ([report] in the manifest) and by `protoquant report RUN`.
#pragma once

#include <cstdint>
#include <filesystem>

#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>

#include "protoquant/experiment_run.h"
#include "protoquant/params.h"

namespace protoquant {

struct ReportSettings {
  bool enabled = true;
  int64_t explanations_per_class = 1;  // written to explanations/<split>-<index>.png too
  int64_t gallery_prototypes = 16;     // the most used ones (largest class weight without usage)
  int64_t patches = 6;                 // nearest training patches per prototype
  int64_t max_classes = 20;            // classes with explanations

  static ReportSettings from(const Params& report);  // the manifest's [report] table
};

// The k values of the accuracy-against-k chart for P prototypes: 1, 2, 3, 5, 10, 20, 50, ... < P,
// then P itself (the unedited model).
std::vector<int64_t> limit_k_values(int64_t prototypes);

// `run`: a finished run whose stages are loaded (kRun after evaluate(), or kOpen after
// train_stages()); `results`: its results.json. Returns the report's path.
//
// The costly figures (accuracy against k, the gallery, the explanations: they need the features)
// are a stage of their own, "report", keyed by the head, the metrics and [report]: a run that
// reuses them draws nothing and extracts no features (ExperimentRun::report_figures). The page
// itself, which shows this run's records (seconds, reuse, finish time), is written every time.
// `force` (protoquant report) draws the figures afresh.
absl::StatusOr<std::filesystem::path> write_run_report(ExperimentRun& run, const nlohmann::json& results,
                                                       const ReportSettings& settings, bool force = false);

}  // namespace protoquant
