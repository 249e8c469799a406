// `protoquant run MANIFEST`: one run or a whole sweep (sweep_runner.h).
#include <cstdlib>

#include <string>

#include "command.h"
#include "data_parallel_options.h"
#include "protoquant/status.h"
#include "protoquant/sweep_runner.h"

namespace protoquant {
namespace {

class RunCommand : public Command {
 public:
  RunCommand(CLI::App& app, const GlobalOptions& global)
      : Command(app.add_subcommand("run", "run an experiment, or every member of a sweep, end to end")), global_(global) {
    CLI::App* c = subcommand_;
    c->add_option("manifest", manifest_, "experiment manifest (TOML)")->required();
    c->add_option("--set", overrides_, "override a manifest value: dotted.key=value");
    c->add_option("--out", out_dir_, "run folder; for a sweep, the folder of its members (default: experiment.output)");
    c->add_flag("--resume", options_.resume,
                "run again in the earlier run folder --out: filed stages are reused, an interrupted one continues "
                "from its last epoch");
    c->add_option("--store", store_, "artifact store (default: experiment.store, else <base>/store)");
    c->add_option("--db", db_, "results store (default: <base>/results.db)");
    c->add_option("--force", options_.settings.force, "recompute this stage and every stage after it")
        ->check(CLI::IsMember({"blackbox", "codebook", "prune", "head"}));
    c->add_option("--jobs", options_.jobs, "sweep members side by side (jobs x threads <= cores)")
        ->check(positive_number());
    c->add_flag("--dry-run", options_.dry_run, "print the plan (per member: reused, shared or computed stages) only");
    c->add_option("--member", options_.member, "run one sweep member only (used by --jobs)")->group("");
    data_parallel_.add_to(c);
  }

  absl::Status run(Registry& registry) override {
    // Refused before anything starts: a sweep's members run one after another on the ranks, and
    // a plan is made by one process.
    const char* world = std::getenv("WORLD_SIZE");
    const bool data_parallel = subcommand_->count("--nproc-per-node") > 0 || (world != nullptr && std::string(world) != "1");
    if (data_parallel && options_.jobs > 1) {
      return absl::InvalidArgumentError("a data-parallel run runs the members of a sweep one after another: drop --jobs");
    }
    if (data_parallel && options_.dry_run) {
      return absl::InvalidArgumentError("--dry-run plans in one process: drop the data-parallel launch");
    }
    PQ_ASSIGN_OR_RETURN(const bool launched, data_parallel_.launch_or_join(subcommand_, global_.argv));
    if (launched) return absl::OkStatus();
    options_.out_dir = out_dir_;
    options_.settings.store = store_;
    options_.db = db_;
    options_.plugins = global_.plugins;
    return run_manifest(manifest_, overrides_, registry, options_);
  }

 private:
  const GlobalOptions& global_;
  std::string manifest_, out_dir_, store_, db_;
  std::vector<std::string> overrides_;
  ManifestRunOptions options_;
  DataParallelOptions data_parallel_;
};

}  // namespace

std::unique_ptr<Command> make_run_command(CLI::App& app, const GlobalOptions& global) {
  return std::make_unique<RunCommand>(app, global);
}

}  // namespace protoquant
