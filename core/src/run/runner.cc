#include "protoquant/runner.h"

#include <chrono>
#include <ctime>
#include <random>

#include <fmt/format.h>

#include "protoquant/atomic_file.h"
#include "protoquant/build_info.h"
#include "protoquant/digest.h"
#include "protoquant/process_group.h"
#include "protoquant/status.h"
#include "report/report.h"

namespace protoquant {
namespace fs = std::filesystem;

namespace {

std::string utc_now_iso8601() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return stamp;
}

// Unique across processes and machines: the folder's name plus 48 random bits.
std::string new_run_id(const fs::path& run_dir) {
  std::mt19937_64 generator{std::random_device{}()};
  return fmt::format("{}-{:012x}", run_dir.filename().string(), generator() & 0xffffffffffffULL);
}

}  // namespace

fs::path default_run_dir(const ExperimentSpec& spec) {
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  return fs::path(spec.experiment.get_string("output")) / fmt::format("{}-{}", spec.experiment.get_string("name"), stamp);
}

absl::StatusOr<nlohmann::json> run_experiment(const ExperimentSpec& spec, Registry& registry,
                                              const RunOptions& options) {
  if (options.resume && options.out_dir.empty()) {
    return absl::InvalidArgumentError("--resume needs the run folder: --out RUN_DIR");
  }
  if (options.resume && !fs::exists(options.out_dir / "manifest.toml")) {
    return absl::FailedPreconditionError(
        fmt::format("{}: nothing to resume (no manifest.toml from an earlier run)", options.out_dir.string()));
  }
  // Data-parallel: rank 0's folder (the default one has the time in its name).
  const fs::path run_dir =
      rank0_decides((options.out_dir.empty() ? default_run_dir(spec) : options.out_dir).string());
  if (is_writer()) fmt::print(stderr, "run folder: {}\n", run_dir.string());
  const auto start = std::chrono::steady_clock::now();
  ExperimentRun run(spec, registry, run_dir, RunMode::kRun, options.settings);
  PQ_RETURN_IF_ERROR(guard("running the experiment", [&] {
    PQ_RETURN_IF_ERROR(run.train_stages());
    return run.evaluate();
  }));
  // A copy: the report may run a feature pass (accuracy against k), which would add to the run's
  // own records what this run did not need.
  nlohmann::json results = run.results();
  if (!is_writer()) return results;  // rank 0 writes the results and the report
  const WorkingAlone alone;            // ... by itself: the other ranks may have left
  results["run_id"] = new_run_id(run_dir);
  results["finished_at"] = utc_now_iso8601();
  results["toolkit"] = {{"version", toolkit_version()}, {"commit", toolkit_commit()}};
  results["manifest_hash"] = sha256_hex(spec.resolved.dump());
  results["total_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // The report first, then results.json, then the results store's row: a failure at any step
  // leaves no results.json, so a run folder either holds a finished run or an unfinished one.
  if (const ReportSettings report = ReportSettings::from(spec.report); report.enabled) {
    const auto report_start = std::chrono::steady_clock::now();
    PQ_ASSIGN_OR_RETURN(const fs::path page, guard("writing the run report", [&] { return write_run_report(run, results, report); }));
    results["stages"]["report"] = run.results()["stages"]["report"];
    fmt::print(stderr, "[report] {} in {:.1f} s\n", page.string(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - report_start).count());
  }
  PQ_RETURN_IF_ERROR(write_file_atomic(run_dir / "results.json", results.dump(2) + "\n"));
  if (options.record) {
    if (absl::Status recorded = options.record(results); !recorded.ok()) {
      std::error_code ec;
      fs::remove(run_dir / "results.json", ec);
      return recorded;
    }
  }
  return results;
}

}  // namespace protoquant
