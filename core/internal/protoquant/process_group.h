// Data-parallel process groups on c10d (PyTorch's distributed engine): ProcessGroupGloo over a
// TCPStore rendezvous, NCCL when this LibTorch was built with it and the run is on CUDA. Joining
// a group makes protoquant::collectives() (collectives.h) that group for the whole process.
//
// A process joins from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT), which `protoquant run --nproc-per-node N` sets for the processes it
// starts (launcher.h), and torchrun or srun set on a cluster (torchrun's agent store included:
// TORCHELASTIC_USE_AGENT_STORE, TORCHELASTIC_RESTART_COUNT). Also read: GLOO_SOCKET_IFNAME (the
// network interface Gloo binds, as in PyTorch) and PROTOQUANT_DIST_TIMEOUT (seconds a
// collective waits for a peer before the rank stops with an error; default 300).
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include <absl/status/statusor.h>
#include <torch/types.h>

#include "protoquant/collectives.h"

namespace protoquant {

struct GroupSettings {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string interface;  // GLOO_SOCKET_IFNAME; empty: the address that reaches master_addr
  std::chrono::seconds timeout{300};
  torch::Device device = torch::kCPU;  // a CUDA run uses NCCL where this LibTorch has it
  // torchrun's static rendezvous (TORCHELASTIC_USE_AGENT_STORE=True): its agent already serves
  // the store on MASTER_PORT, so every rank, rank 0 too, joins it as a client, under the prefix
  // of this restart (TORCHELASTIC_RESTART_COUNT), as torch.distributed does.
  bool agent_store = false;
  int restart_count = 0;

  // nullopt when the environment names no group (WORLD_SIZE unset); an error for a half-set or
  // malformed one, naming the variable.
  static absl::StatusOr<std::optional<GroupSettings>> from_environment();
};

// Rendezvous at master_addr:master_port (rank 0 serves the store) and make the group this
// process's collectives(). Errors (a peer that never comes, a port in use) are one line.
absl::Status join_process_group(const GroupSettings& settings);
// The same rendezvous, returning the group without making it this process's: tests run several
// ranks as threads of one process, each calling collective code with its own group.
absl::StatusOr<std::shared_ptr<Collectives>> connect_process_group(const GroupSettings& settings);
// Makes `group` this process's collectives() (nullptr: a process alone again).
void set_collectives(std::shared_ptr<Collectives> group);

// For its lifetime this process works alone (collectives are the identity), then rejoins its
// group: for what rank 0 does by itself once the others are done, like drawing the report.
class WorkingAlone {
 public:
  WorkingAlone();
  ~WorkingAlone();
  WorkingAlone(const WorkingAlone&) = delete;
  WorkingAlone& operator=(const WorkingAlone&) = delete;

 private:
  std::shared_ptr<Collectives> group_;
};

// The helpers the stages share. All of them are collective: every rank calls them, in the same
// order; with one process they cost nothing.

// Whether this process writes: rank 0 writes checkpoints, artifacts, records and results.
bool is_writer();
// Rank 0's value, on every rank: a decision that must be the same everywhere (reuse a filed stage
// or compute it, a cache hit) is made once, by the writer.
bool rank0_decides(bool value);
std::string rank0_decides(const std::string& value);
// Rank 0's outcome of something only it did (filing a stage, preparing the run folder), on every
// rank: OK, or an error (on the others: "stopped because rank 0 failed: ...").
absl::Status rank0_status(const absl::Status& status);

// This rank's shard_of(n) (collectives.h) in collectives()' group.
Shard my_shard(int64_t n);

// Every rank's rows (its shard_of(n) of a tensor of n rows), concatenated in rank order: the
// whole tensor, on every rank, in `local`'s dtype and memory format.
torch::Tensor gather_rows(const torch::Tensor& local, int64_t n);

// Fails when the replicas of these tensors differ across ranks (compares per-tensor sums and sums
// of squares in fp64): the guard that a stage's state stayed identical on every rank.
absl::Status check_replicas_identical(const std::vector<torch::Tensor>& tensors, const std::string& what);

}  // namespace protoquant
