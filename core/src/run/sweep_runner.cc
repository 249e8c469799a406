#include "protoquant/sweep_runner.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "protoquant/child_processes.h"
#include "protoquant/process.h"
#include "protoquant/process_group.h"
#include "protoquant/results_store.h"
#include "protoquant/runner.h"
#include "protoquant/status.h"
#include "protoquant/sweep.h"

namespace protoquant {
namespace fs = std::filesystem;

namespace {

struct Layout {
  fs::path base;   // where the store and results.db go by default
  fs::path store;
  fs::path db;
  std::vector<fs::path> run_dirs;  // one per member
};

Layout lay_out(const std::vector<SweepMember>& members, const ManifestRunOptions& options, bool single) {
  Layout layout;
  const ExperimentSpec& first = members.front().spec;
  if (options.member >= 0) {
    layout.base = fs::absolute(options.out_dir).parent_path();  // a child: --out is its member's folder
  } else if (!options.out_dir.empty()) {
    layout.base = single ? fs::absolute(options.out_dir).parent_path() : fs::absolute(options.out_dir);
  } else {
    layout.base = fs::absolute(first.experiment.get_string("output"));
  }
  if (!options.settings.store.empty()) layout.store = options.settings.store;
  else if (!first.experiment.get_string("store").empty()) layout.store = first.experiment.get_string("store");
  else layout.store = layout.base / "store";
  layout.db = options.db.empty() ? layout.base / kResultsStoreFile : options.db;
  for (const auto& member : members) {
    if (options.member >= 0 || (single && !options.out_dir.empty())) layout.run_dirs.push_back(options.out_dir);
    else if (single) layout.run_dirs.push_back(default_run_dir(member.spec));
    else layout.run_dirs.push_back(layout.base / member.name);
  }
  return layout;
}

std::string assignment_text(const SweepMember& member) {
  std::string text;
  for (const auto& [key, value] : member.assignment.items()) {
    text += fmt::format("{}{}={}", text.empty() ? "" : ", ", key, value.is_string() ? value.get<std::string>() : value.dump());
  }
  return text;
}

// Prints each member's stages as reused (filed in the store), shared (computed by an earlier
// member of this sweep) or computed; returns how many stages will be computed.
absl::StatusOr<int> print_plan(const std::vector<SweepMember>& members, const Layout& layout, Registry& registry,
                               const RunSettings& settings) {
  fmt::print(stderr, "plan: {} member{}; store {}; results {}\n", members.size(), members.size() == 1 ? "" : "s",
             layout.store.string(), layout.db.string());
  std::set<std::string> computed_earlier;
  int to_compute = 0;
  for (size_t i = 0; i < members.size(); ++i) {
    ExperimentRun run(members[i].spec, registry, layout.run_dirs[i], RunMode::kRun, settings);
    PQ_ASSIGN_OR_RETURN(const std::vector<StagePlan> plan, run.plan());
    std::string line;
    for (const auto& stage : plan) {
      const std::string id = stage.stage + "/" + stage.key;
      const char* what = stage.reused ? "reused" : computed_earlier.count(id) ? "shared" : "compute";
      if (!stage.reused && !computed_earlier.count(id)) ++to_compute;
      computed_earlier.insert(id);
      line += fmt::format("{}{} {}", line.empty() ? "" : ", ", stage.stage, what);
    }
    const std::string assignment = assignment_text(members[i]);
    fmt::print(stderr, "  member {} {}{}: {}\n", i, members[i].name, assignment.empty() ? "" : " (" + assignment + ")",
               line);
  }
  return to_compute;
}

absl::Status record_run(const fs::path& db, const nlohmann::json& results) {
  PQ_ASSIGN_OR_RETURN(ResultsStore store, ResultsStore::open(db));
  return store.add_run(results);
}

absl::Status run_member(const SweepMember& member, const fs::path& run_dir, const Layout& layout, Registry& registry,
                        const ManifestRunOptions& options, RunSettings settings) {
  settings.store = layout.store;
  RunOptions run_options{run_dir, options.resume, settings};
  // Data-parallel: rank 0 records the run.
  if (is_writer()) run_options.record = [&](const nlohmann::json& results) {
    return annotate(record_run(layout.db, results), "recording the run");
  };
  PQ_ASSIGN_OR_RETURN(const nlohmann::json results, run_experiment(member.spec, registry, run_options));
  if (!is_writer()) return absl::OkStatus();
  const auto accuracy = results["metrics"].value("accuracy", nlohmann::json::object());
  fmt::print("{}: accuracy {:.4f} (black box {:.4f}) in {:.1f} s; results: {}/results.json\n", member.name,
             accuracy.value("accuracy", 0.0), accuracy.value("blackbox_accuracy", 0.0),
             results["total_seconds"].get<double>(), results["run_dir"].get<std::string>());
  return absl::OkStatus();
}

// The command line of the child that runs member `index` (this same executable).
std::vector<std::string> child_command(const fs::path& manifest, const std::vector<std::string>& overrides,
                                       const ManifestRunOptions& options, const Layout& layout, int index,
                                       int64_t threads) {
  std::vector<std::string> argv = {"/proc/self/exe"};
  for (const auto& plugin : options.plugins) argv.insert(argv.end(), {"--plugin", plugin});
  argv.insert(argv.end(), {"run", manifest.string(), "--member", std::to_string(index), "--out",
                           layout.run_dirs[index].string(), "--store", layout.store.string(), "--db", layout.db.string()});
  for (const auto& o : overrides) argv.insert(argv.end(), {"--set", o});
  argv.insert(argv.end(), {"--set", fmt::format("experiment.threads={}", threads)});
  if (options.resume) argv.push_back("--resume");
  return argv;
}

}  // namespace

absl::Status run_manifest(const fs::path& manifest, const std::vector<std::string>& overrides, Registry& registry,
                          const ManifestRunOptions& options) {
  PQ_ASSIGN_OR_RETURN(std::vector<SweepMember> members, load_sweep(manifest, overrides, registry));
  const bool single = members.size() == 1 && members.front().assignment.empty();
  if (options.member >= 0) {
    if (options.member >= static_cast<int>(members.size())) {
      return absl::OutOfRangeError(fmt::format("{}: --member {}: the sweep has members 0..{}", manifest.string(),
                                               options.member, members.size() - 1));
    }
    members = {members[options.member]};
  }
  if (options.resume && options.out_dir.empty()) {
    return absl::InvalidArgumentError("--resume needs the run folder: --out RUN_DIR");
  }
  if (options.jobs > 1 && !options.settings.force.empty()) {
    // Each child would force the shared upstream stages again.
    return absl::InvalidArgumentError("--force runs with --jobs 1");
  }
  const Layout layout = lay_out(members, options, single);
  // Every check that can fail before the work, so that nothing trains for a run that cannot finish.
  const int64_t cores = resolve_threads(0);
  const int64_t asked = members.front().spec.experiment.get_int("threads");
  const int64_t threads = asked > 0 ? asked : std::max<int64_t>(1, cores / std::max(1, options.jobs));
  if (options.jobs > 1 && members.size() > 1 && options.jobs * threads > cores) {
    return absl::InvalidArgumentError(fmt::format("--jobs {} x experiment.threads {} is more than the {} cores",
                                                  options.jobs, threads, cores));
  }
  absl::Status outputs = absl::OkStatus();
  if (is_writer() && options.member < 0) {
    // Opened (and created) now: a folder, an unwritable place or a foreign file is said before
    // any stage trains, not after all of them.
    outputs = ResultsStore::check_writable(layout.db);
    if (outputs.ok() && !options.dry_run) outputs = ResultsStore::open(layout.db).status();
  }
  PQ_RETURN_IF_ERROR(rank0_status(outputs));  // data-parallel: every rank stops, not only rank 0
  RunSettings settings = options.settings;
  settings.store = layout.store;
  settings.datasets = std::make_shared<DatasetCache>();
  settings.recomputed = std::make_shared<std::set<std::string>>();  // --force: once per stage and key

  if (options.member < 0 && (!single || options.dry_run) && is_writer()) {
    PQ_ASSIGN_OR_RETURN(const int to_compute, print_plan(members, layout, registry, settings));
    fmt::print(stderr, "plan: {} stage{} to compute\n", to_compute, to_compute == 1 ? "" : "s");
  }
  if (options.dry_run) return absl::OkStatus();

  std::vector<std::string> failures;
  if (options.jobs <= 1 || members.size() == 1) {
    for (size_t i = 0; i < members.size(); ++i) {
      const absl::Status status = run_member(members[i], layout.run_dirs[i], layout, registry, options, settings);
      if (!status.ok()) {
        if (members.size() == 1) return status;
        failures.push_back(fmt::format("member {} ({}): {}", i, members[i].name, std::string(status.message())));
        fmt::print(stderr, "error: {}\n", failures.back());
      }
    }
  } else {
    // Ctrl-C or `timeout` stops the members too, not only this process.
    ChildProcesses children;
    std::map<pid_t, size_t> running;
    size_t next = 0;
    while (next < members.size() || !running.empty()) {
      while (next < members.size() && static_cast<int>(running.size()) < options.jobs && !ChildProcesses::received()) {
        auto pid = children.start_self(child_command(manifest, overrides, options, layout, static_cast<int>(next), threads));
        if (!pid.ok()) {
          children.signal_all(SIGTERM);
          while (!running.empty()) {
            int ignored = 0;
            if (const pid_t done = children.wait_any(ignored); done > 0) running.erase(done); else break;
          }
          return pid.status();
        }
        running[*pid] = next++;
      }
      if (running.empty()) break;
      int status = 0;
      const pid_t done = children.wait_any(status);
      if (done < 0) return absl::InternalError(fmt::format("waiting for sweep members failed: {}", std::strerror(errno)));
      const size_t index = running.at(done);
      running.erase(done);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        failures.push_back(fmt::format("member {} ({}) failed; its log is above", index, members[index].name));
      }
    }
    if (const int signal = ChildProcesses::received(); signal != 0 && (next < members.size() || !failures.empty())) {
      return absl::CancelledError(fmt::format("stopped by {}: passed on to the running members; {} of {} members had not "
                                              "started (rerun the same command to resume){}{}",
                                              signal_text(signal), members.size() - next, members.size(),
                                              failures.empty() ? "" : "\n", fmt::join(failures, "\n")));
    }
  }
  if (!failures.empty()) {
    return absl::AbortedError(fmt::format("{} of {} members failed:\n{}", failures.size(), members.size(),
                                          fmt::join(failures, "\n")));
  }
  return absl::OkStatus();
}

}  // namespace protoquant
