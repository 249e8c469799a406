// The collectives of this process's data-parallel group (torch.distributed's role, on c10d).
// A process alone is a group of one, where every call is a no-op: components call these
// unconditionally and run the same single-process or data-parallel.
//
// A component whose state changes in its forward pass must keep the replicas identical: EMA-VQ
// sums its assignment counts and vector sums over the ranks before it updates the codebook, so
// every rank takes the step one process would take on the whole global batch. Every rank must
// make the same calls in the same order (a collective that one rank skips blocks the others until
// the group's timeout), so a call may depend on the data only through values that are already
// identical across ranks.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

namespace protoquant {

class Collectives {
 public:
  virtual ~Collectives() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // In place, elementwise sum over the ranks. Tensors of one dtype travel in one flat buffer.
  virtual void all_reduce_sum(const std::vector<torch::Tensor>& tensors) = 0;
  // In place, `root`'s values on every rank.
  virtual void broadcast(const std::vector<torch::Tensor>& tensors, int root) = 0;
  // Every rank's tensor (same shape and dtype on every rank), in rank order.
  virtual std::vector<torch::Tensor> all_gather(const torch::Tensor& tensor) = 0;
  virtual void barrier() = 0;
};

// This process's group: one process alone unless a data-parallel run joined a group.
Collectives& collectives();

// Rank `rank`'s contiguous share [begin, end) of n items: shares differ in length by at most
// one, and concatenated in rank order they are 0..n-1. How collective code splits rows.
struct Shard {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};
inline Shard shard_of(int64_t n, int rank, int world_size) {
  return {n * rank / world_size, n * (rank + 1) / world_size};
}

}  // namespace protoquant
