// `protoquant run MANIFEST`: one run or a whole sweep (sweep_runner.h).
#include <cstdlib>

#include <fmt/format.h>
#include <torch/cuda.h>

#include "command.h"
#include "protoquant/launcher.h"
#include "protoquant/process_group.h"
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
    // Data-parallel (torchrun's launch options; a process started by torchrun or srun joins the
    // group its environment names instead).
    const char* group = "Data-parallel";
    c->add_option("--nproc-per-node", launch_.nproc_per_node, "start N data-parallel processes on this node")
        ->check(positive_number())->group(group);
    c->add_option("--nnodes", launch_.nnodes, "nodes of the run (default 1)")->check(positive_number())->group(group);
    c->add_option("--node-rank", launch_.node_rank, "this node's index, 0..nnodes-1")->group(group);
    c->add_option("--master-addr", launch_.master_addr, "address of node 0, where rank 0 serves the store")->group(group);
    c->add_option("--master-port", launch_.master_port, "port of the store (default: a free one; needed with --nnodes)")
        ->check(CLI::Range(1, 65535))->group(group);
    c->add_option("--dist-timeout", dist_timeout_,
                  "seconds a collective or the rendezvous waits for a peer before the rank stops (default 300)")
        ->check(CLI::Range(1, 86400))->group(group);
  }

  absl::Status run(Registry& registry) override {
    // Through the environment, which the launched ranks inherit and torchrun's ranks may set.
    if (dist_timeout_ > 0) ::setenv("PROTOQUANT_DIST_TIMEOUT", std::to_string(dist_timeout_).c_str(), 1);
    const bool launching = subcommand_->count("--nproc-per-node") > 0;
    PQ_ASSIGN_OR_RETURN(std::optional<GroupSettings> group, GroupSettings::from_environment());
    if (launching) {
      if (group) return absl::InvalidArgumentError("--nproc-per-node inside a process of a data-parallel group (WORLD_SIZE is set)");
      if (options_.jobs > 1) return absl::InvalidArgumentError("--nproc-per-node runs the members of a sweep one after another: drop --jobs");
      return launch_local_ranks(without_launch_options(global_.argv), launch_);
    }
    if (group && group->world_size > 1) {
      if (options_.jobs > 1) return absl::InvalidArgumentError("a data-parallel run takes no --jobs");
      if (options_.dry_run) return absl::InvalidArgumentError("--dry-run plans in one process: drop the data-parallel launch");
      if (torch::cuda::is_available()) group->device = torch::Device(torch::kCUDA, group->local_rank);
      PQ_RETURN_IF_ERROR(join_process_group(*group));
    }
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
  LaunchSettings launch_;
  int dist_timeout_ = 0;
};

}  // namespace

std::unique_ptr<Command> make_run_command(CLI::App& app, const GlobalOptions& global) {
  return std::make_unique<RunCommand>(app, global);
}

}  // namespace protoquant
