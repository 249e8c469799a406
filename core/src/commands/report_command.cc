// `protoquant report RUN`: (re)writes a finished run's report.html from its folder: the same page
// `protoquant run` (and `protoquant evaluate`) write at their end ([report] in the manifest), for a
// run made before reports existed or with other settings.
#include <fmt/format.h>

#include "command.h"
#include "protoquant/atomic_file.h"
#include "protoquant/experiment_run.h"
#include "protoquant/manifest.h"
#include "protoquant/status.h"
#include "report/report.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;

class ReportCommand : public Command {
 public:
  explicit ReportCommand(CLI::App& app)
      : Command(app.add_subcommand("report", "write a finished run's report.html (metrics, stages, curves, usage, "
                                             "accuracy against k, gallery, explanations, manifest)")) {
    CLI::App* c = subcommand_;
    c->add_option("run_dir", run_dir_, "run folder")->required();
    c->add_option("--explanations-per-class", explanations_, "override [report] explanations_per_class")
        ->check(CLI::Range(0, 16));
    c->add_option("--gallery-prototypes", gallery_, "override [report] gallery_prototypes")->check(CLI::Range(0, 1024));
  }

  absl::Status run(Registry& registry) override {
    const fs::path run_dir(run_dir_), manifest = run_dir / "manifest.toml";
    if (!fs::exists(manifest)) return absl::NotFoundError(fmt::format("{}: not a run folder (no manifest.toml)", run_dir_));
    PQ_ASSIGN_OR_RETURN(const nlohmann::json results, read_json_file(run_dir / "results.json"));
    PQ_ASSIGN_OR_RETURN(const ExperimentSpec spec, load_experiment(manifest, {}, registry));
    ExperimentRun run(spec, registry, run_dir, RunMode::kOpen);
    PQ_RETURN_IF_ERROR(run.train_stages());
    ReportSettings settings = ReportSettings::from(spec.report);
    if (explanations_ >= 0) settings.explanations_per_class = explanations_;
    if (gallery_ >= 0) settings.gallery_prototypes = gallery_;
    PQ_ASSIGN_OR_RETURN(const fs::path report, write_run_report(run, results, settings, /*force=*/true));
    fmt::print("report: {}\n", report.string());
    return absl::OkStatus();
  }

 private:
  std::string run_dir_;
  int64_t explanations_ = -1, gallery_ = -1;
};

}  // namespace

std::unique_ptr<Command> make_report_command(CLI::App& app) { return std::make_unique<ReportCommand>(app); }

}  // namespace protoquant
