// The run report's figures (report.h): the explanations, the prototype gallery, the accuracy
// against k. Keyed by what they show (the head's key, the metrics' keys, [report]'s settings),
// so a rerun that reuses every stage reuses the figures too and extracts no features.
#include "protoquant/atomic_file.h"
#include "protoquant/status.h"
#include "stages/run_state.h"
#include "stages/stages.h"

namespace protoquant {
namespace fs = std::filesystem;

absl::StatusOr<nlohmann::json> ReportStage::key_inputs(const RunState& run) const {
  // The codebook's usage, also shown, is in the head's key's chain.
  nlohmann::json metrics = nlohmann::json::object();
  for (const auto& instance : run.metric_instances) metrics[instance] = run.keys.at("metric." + instance).key;
  return nlohmann::json{{"head", run.final_head_key()},
                        {"metrics", metrics},
                        {"settings", run.spec.report.to_json()},
                        {"split", run.eval_split}};
}

// Kept in the run folder beside report.html: the figures this run's page was drawn from.
std::map<std::string, fs::path> ReportStage::outputs(const RunState& run) const {
  return {{"figures.json", run.run_dir / "report" / "figures.json"}};
}

absl::StatusOr<nlohmann::json> ReportStage::compute(RunState& run) {
  if (!draw_) return absl::InternalError("the report stage was run without its drawing");
  PQ_ASSIGN_OR_RETURN(drawn_, draw_());
  PQ_RETURN_IF_ERROR(write_file_atomic(outputs(run).at("figures.json"), drawn_->dump() + "\n"));
  return nlohmann::json{{"explanations", (*drawn_)["explanations"].size()}};
}

}  // namespace protoquant
