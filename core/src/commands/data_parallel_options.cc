#include "data_parallel_options.h"

#include <cstdlib>

#include <torch/cuda.h>

#include "command.h"
#include "protoquant/process_group.h"
#include "protoquant/status.h"

namespace protoquant {

void DataParallelOptions::add_to(CLI::App* c) {
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

absl::StatusOr<bool> DataParallelOptions::launch_or_join(const CLI::App* command,
                                                         const std::vector<std::string>& argv) const {
  // Through the environment, which the launched ranks inherit and torchrun's ranks may set.
  if (dist_timeout_ > 0) ::setenv("PROTOQUANT_DIST_TIMEOUT", std::to_string(dist_timeout_).c_str(), 1);
  PQ_ASSIGN_OR_RETURN(std::optional<GroupSettings> group, GroupSettings::from_environment());
  if (command->count("--nproc-per-node") > 0) {
    if (group) return absl::InvalidArgumentError("--nproc-per-node inside a process of a data-parallel group (WORLD_SIZE is set)");
    PQ_RETURN_IF_ERROR(launch_local_ranks(without_launch_options(argv), launch_));
    return true;
  }
  if (group && group->world_size > 1) {
    if (torch::cuda::is_available()) group->device = torch::Device(torch::kCUDA, group->local_rank);
    PQ_RETURN_IF_ERROR(join_process_group(*group));
  }
  return false;
}

}  // namespace protoquant
