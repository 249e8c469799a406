#include "protoquant/runner.h"

#include <chrono>
#include <ctime>

#include <fmt/format.h>

#include "protoquant/atomic_file.h"
#include "protoquant/experiment_run.h"
#include "protoquant/status.h"

namespace protoquant {
namespace fs = std::filesystem;

namespace {

fs::path default_run_dir(const ExperimentSpec& spec) {
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  return fs::path(spec.experiment.get_string("output")) / fmt::format("{}-{}", spec.experiment.get_string("name"), stamp);
}

}  // namespace

absl::StatusOr<nlohmann::json> run_experiment(const ExperimentSpec& spec, Registry& registry,
                                              const RunOptions& options) {
  if (options.resume && options.out_dir.empty()) {
    return absl::InvalidArgumentError("--resume needs the run folder: --out RUN_DIR");
  }
  const fs::path run_dir = options.out_dir.empty() ? default_run_dir(spec) : options.out_dir;
  fmt::print(stderr, "run folder: {}\n", run_dir.string());
  const auto start = std::chrono::steady_clock::now();
  ExperimentRun run(spec, registry, run_dir, options.resume ? RunMode::kResume : RunMode::kFresh);
  PQ_RETURN_IF_ERROR(guard("running the experiment", [&] {
    PQ_RETURN_IF_ERROR(run.train_stages());
    return run.evaluate();
  }));
  nlohmann::json& results = run.results();
  results["total_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  PQ_RETURN_IF_ERROR(write_file_atomic(run_dir / "results.json", results.dump(2) + "\n"));
  return results;
}

}  // namespace protoquant
