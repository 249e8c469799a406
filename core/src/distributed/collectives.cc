#include "protoquant/collectives.h"

#include <memory>

#include "protoquant/process_group.h"

namespace protoquant {
namespace {

// A process alone: every collective is the identity.
class SingleProcess : public Collectives {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  void all_reduce_sum(const std::vector<torch::Tensor>&) override {}
  void broadcast(const std::vector<torch::Tensor>&, int) override {}
  std::vector<torch::Tensor> all_gather(const torch::Tensor& tensor) override { return {tensor}; }
  void barrier() override {}
};

std::shared_ptr<Collectives>& current() {
  static std::shared_ptr<Collectives> group = std::make_shared<SingleProcess>();
  return group;
}

}  // namespace

Collectives& collectives() { return *current(); }

void set_collectives(std::shared_ptr<Collectives> group) {
  current() = group ? std::move(group) : std::make_shared<SingleProcess>();
}

WorkingAlone::WorkingAlone() : group_(current()) { current() = std::make_shared<SingleProcess>(); }

WorkingAlone::~WorkingAlone() { current() = std::move(group_); }

}  // namespace protoquant
