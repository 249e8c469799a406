// `protoquant run --nproc-per-node N`: torchrun's local launcher. Starts N copies of this
// command, each with torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT; process_group.h), waits for them all, and when one fails gives the
// others the group's timeout to stop on their own (they do, with a line naming their rank) before
// it stops them.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <absl/status/status.h>

namespace protoquant {

struct LaunchSettings {
  int nproc_per_node = 1;
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;  // 0: a free port of this machine (one node only)
};

// argv: the command each process runs (argv[0] is replaced by this executable), without the
// launch options. OK when every rank exited 0; else one line naming the first rank that failed.
absl::Status launch_local_ranks(const std::vector<std::string>& argv, const LaunchSettings& settings);

// A TCP port on 127.0.0.1 that nobody listens on now (the kernel's choice), for a store to bind.
std::optional<int> free_local_port();

// argv without the launch options (--nproc-per-node, --nnodes, --node-rank, --master-addr,
// --master-port; "--option value" and "--option=value").
std::vector<std::string> without_launch_options(const std::vector<std::string>& argv);

}  // namespace protoquant
