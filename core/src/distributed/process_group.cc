#include "protoquant/process_group.h"

#include <cstdlib>
#include <cstring>
#include <map>
#include <stdexcept>

#include <sched.h>

#include <absl/strings/numbers.h>
#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/torch.h>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "protoquant/status.h"

namespace protoquant {
namespace {

// The first line of an exception's message (c10 errors append a backtrace).
std::string first_line(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  std::string text = c10_error ? c10_error->what_without_backtrace() : e.what();
  if (const size_t newline = text.find('\n'); newline != std::string::npos) text.resize(newline);
  return text;
}

// Flat buffers of at most this many bytes: one collective per bucket, not per tensor (DDP's
// 25 MiB buckets), and bounded extra memory.
constexpr int64_t kBucketBytes = 25LL << 20;

// How long a rank polls a CPU collective before it blocks on it (wait() below).
constexpr std::chrono::milliseconds kPollBeforeBlocking{10};

class C10dGroup : public Collectives {
 public:
  // `gloo` takes CPU tensors; `device` (NCCL, or `gloo` again) takes CUDA tensors.
  C10dGroup(c10::intrusive_ptr<c10d::ProcessGroup> gloo, c10::intrusive_ptr<c10d::ProcessGroup> device,
            const GroupSettings& settings)
      : gloo_(std::move(gloo)), device_(std::move(device)), rank_(settings.rank), world_(settings.world_size),
        timeout_(settings.timeout) {}

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }

  void all_reduce_sum(const std::vector<torch::Tensor>& tensors) override {
    in_buckets(tensors, "all-reduce",
               [&](c10d::ProcessGroup& group, std::vector<at::Tensor>& buffer) { return group.allreduce(buffer); });
  }

  void broadcast(const std::vector<torch::Tensor>& tensors, int root) override {
    c10d::BroadcastOptions options;
    options.rootRank = root;
    in_buckets(tensors, "broadcast", [&](c10d::ProcessGroup& group, std::vector<at::Tensor>& buffer) {
      return group.broadcast(buffer, options);
    });
  }

  std::vector<torch::Tensor> all_gather(const torch::Tensor& tensor) override {
    std::vector<at::Tensor> input{tensor.contiguous()};
    std::vector<std::vector<at::Tensor>> output(1);
    for (int r = 0; r < world_; ++r) output[0].push_back(torch::empty_like(input[0]));
    c10d::ProcessGroup& group = for_device(tensor.device());
    wait(group, "all-gather", [&] { return group.allgather(output, input); });
    return output[0];
  }

  void barrier() override {
    wait(*gloo_, "barrier", [&] { return gloo_->barrier(); });
  }

 private:
  // Tensors of one dtype and device go through flat buffers, copied back after.
  template <typename Op>
  void in_buckets(const std::vector<torch::Tensor>& tensors, const char* what, Op op) {
    std::map<std::pair<int, std::string>, std::vector<torch::Tensor>> groups;
    for (const auto& t : tensors) {
      if (t.defined() && t.numel() > 0) groups[{static_cast<int>(t.scalar_type()), t.device().str()}].push_back(t);
    }
    for (auto& [kind, members] : groups) {
      size_t first = 0;
      while (first < members.size()) {
        size_t last = first;
        int64_t bytes = 0;
        while (last < members.size() && (last == first || bytes + members[last].nbytes() <= kBucketBytes)) {
          bytes += static_cast<int64_t>(members[last].nbytes());
          ++last;
        }
        c10d::ProcessGroup& group = for_device(members[first].device());
        if (last - first == 1 && members[first].is_contiguous()) {
          std::vector<at::Tensor> buffer{members[first]};
          wait(group, what, [&] { return op(group, buffer); });
        } else {
          std::vector<torch::Tensor> flat;
          for (size_t i = first; i < last; ++i) flat.push_back(members[i].reshape({-1}));
          std::vector<at::Tensor> buffer{torch::cat(flat)};
          wait(group, what, [&] { return op(group, buffer); });
          int64_t offset = 0;
          for (size_t i = first; i < last; ++i) {
            const int64_t n = members[i].numel();
            members[i].copy_(buffer[0].slice(0, offset, offset + n).view(members[i].sizes()));
            offset += n;
          }
        }
        first = last;
      }
    }
  }

  // NCCL takes only CUDA tensors: the small CPU tensors of decisions (flags, masses, row
  // indices) go through Gloo, as PyTorch's users pair a Gloo group with an NCCL one.
  c10d::ProcessGroup& for_device(const torch::Device& device) { return device.is_cpu() ? *gloo_ : *device_; }

  template <typename Start>
  void wait(c10d::ProcessGroup& group, const char* what, Start start) {
    try {
      auto work = start();
      // Gloo only: NCCL's wait() orders streams and must not be polled from the host.
      if (&group == gloo_.get()) {
        // A collective inside a training step completes within a millisecond or two of its
        // start. Blocking at once costs more than that on a virtual machine: the thread, then
        // Gloo's worker and its network thread, each wake a halted CPU (measured on a 2-core VM:
        // a gradient all-reduce between 5 ms steps took 1-2 ms blocking against 0.3-0.7 ms
        // polling; back to back, 0.3 ms either way). So poll first, yielding the core to those
        // threads, and block only on a longer wait (a peer still computing, rank 0 writing).
        const auto until = std::chrono::steady_clock::now() + kPollBeforeBlocking;
        while (!work->isCompleted() && std::chrono::steady_clock::now() < until) sched_yield();
      }
      work->wait(timeout_);
    } catch (const std::exception& e) {
      // One line that names this rank; the launcher names the rank that stopped first.
      throw std::runtime_error(fmt::format("rank {} of {}: {} failed (a peer stopped, or did not answer within {} s): {}",
                                           rank_, world_, what, timeout_.count(), first_line(e)));
    }
  }

  c10::intrusive_ptr<c10d::ProcessGroup> gloo_, device_;
  int rank_, world_;
  std::chrono::seconds timeout_;
};

absl::StatusOr<int> env_int(const char* name, std::optional<int> fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') {
    if (fallback) return *fallback;
    return absl::InvalidArgumentError(fmt::format("data-parallel: WORLD_SIZE is set but {} is not", name));
  }
  int parsed = 0;
  if (!absl::SimpleAtoi(value, &parsed) || parsed < 0) {
    return absl::InvalidArgumentError(fmt::format("data-parallel: {}='{}' is not a non-negative integer", name, value));
  }
  return parsed;
}

bool is_loopback(const std::string& address) {
  return address == "localhost" || address.rfind("127.", 0) == 0 || address == "::1";
}

}  // namespace

absl::StatusOr<std::optional<GroupSettings>> GroupSettings::from_environment() {
  if (std::getenv("WORLD_SIZE") == nullptr) return std::optional<GroupSettings>();
  GroupSettings s;
  PQ_ASSIGN_OR_RETURN(s.world_size, env_int("WORLD_SIZE", std::nullopt));
  PQ_ASSIGN_OR_RETURN(s.rank, env_int("RANK", std::nullopt));
  PQ_ASSIGN_OR_RETURN(s.local_rank, env_int("LOCAL_RANK", s.rank));
  PQ_ASSIGN_OR_RETURN(s.local_world_size, env_int("LOCAL_WORLD_SIZE", 1));
  PQ_ASSIGN_OR_RETURN(s.master_port, env_int("MASTER_PORT", 29500));
  PQ_ASSIGN_OR_RETURN(const int timeout, env_int("PROTOQUANT_DIST_TIMEOUT", 300));
  s.timeout = std::chrono::seconds(std::max(1, timeout));
  if (const char* addr = std::getenv("MASTER_ADDR"); addr != nullptr && *addr != '\0') s.master_addr = addr;
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname != nullptr) s.interface = ifname;
  if (const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE"); agent != nullptr) {
    s.agent_store = std::string(agent) == "True";  // Python's str(True), as torch.distributed reads it
  }
  if (s.agent_store) {
    PQ_ASSIGN_OR_RETURN(s.restart_count, env_int("TORCHELASTIC_RESTART_COUNT", 0));
  }
  if (s.world_size < 1) return absl::InvalidArgumentError("data-parallel: WORLD_SIZE must be at least 1");
  if (s.rank >= s.world_size) {
    return absl::InvalidArgumentError(fmt::format("data-parallel: RANK={} is not below WORLD_SIZE={}", s.rank, s.world_size));
  }
  if (s.master_port < 1 || s.master_port > 65535) {
    return absl::InvalidArgumentError(fmt::format("data-parallel: MASTER_PORT={} is not a port", s.master_port));
  }
  return std::optional<GroupSettings>(s);
}

absl::StatusOr<std::shared_ptr<Collectives>> connect_process_group(const GroupSettings& s) {
  return guard(fmt::format("joining the data-parallel group at {}:{} as rank {} of {}", s.master_addr, s.master_port,
                           s.rank, s.world_size),
               [&]() -> absl::StatusOr<std::shared_ptr<Collectives>> {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<std::uint16_t>(s.master_port);
    store_options.isServer = s.rank == 0 && !s.agent_store;
    store_options.numWorkers = static_cast<size_t>(s.world_size);
    store_options.waitWorkers = true;
    store_options.timeout = s.timeout;
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::TCPStore>(s.master_addr, store_options);
    if (s.agent_store) {
      store = c10::make_intrusive<c10d::PrefixStore>(fmt::format("/worker/attempt_{}", s.restart_count), store);
    }
    // Each group keys its rendezvous under its own prefix of the one store.
    auto options = c10d::ProcessGroupGloo::Options::create(s.timeout);
    options->devices.push_back(
        !s.interface.empty()           ? c10d::ProcessGroupGloo::createDeviceForInterface(s.interface)
        : is_loopback(s.master_addr)   ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                       : c10d::ProcessGroupGloo::createDefaultDevice());
    options->threads = 1;  // one collective at a time: the compute threads keep the cores
    c10::intrusive_ptr<c10d::ProcessGroup> gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("gloo", store), s.rank, s.world_size, options);
    c10::intrusive_ptr<c10d::ProcessGroup> device = gloo;
    if (s.device.is_cuda()) {
#ifdef USE_C10D_NCCL
      auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
      nccl_options->timeout = s.timeout;
      device = c10::make_intrusive<c10d::ProcessGroupNCCL>(c10::make_intrusive<c10d::PrefixStore>("nccl", store),
                                                           s.rank, s.world_size, nccl_options);
#else
      if (s.rank == 0) {
        fmt::print(stderr, "data-parallel: this LibTorch has no NCCL (a CUDA LibTorch built with it has); CUDA "
                           "tensors go through Gloo, more slowly\n");
      }
#endif
    }
    return std::shared_ptr<Collectives>(std::make_shared<C10dGroup>(gloo, device, s));
  });
}

absl::Status join_process_group(const GroupSettings& s) {
  if (s.world_size == 1) return absl::OkStatus();
  PQ_ASSIGN_OR_RETURN(auto group, connect_process_group(s));
  set_collectives(std::move(group));
  return absl::OkStatus();
}

bool is_writer() { return collectives().rank() == 0; }

bool rank0_decides(bool value) {
  if (collectives().world_size() == 1) return value;
  auto flag = torch::tensor({value ? 1 : 0}, torch::kInt32);
  collectives().broadcast({flag}, 0);
  return flag.item<int>() != 0;
}

std::string rank0_decides(const std::string& value) {
  if (collectives().world_size() == 1) return value;
  auto length = torch::tensor({static_cast<int64_t>(value.size())}, torch::kInt64);
  collectives().broadcast({length}, 0);
  auto bytes = torch::zeros({length.item<int64_t>()}, torch::kUInt8);
  if (collectives().rank() == 0 && !value.empty()) std::memcpy(bytes.data_ptr(), value.data(), value.size());
  collectives().broadcast({bytes}, 0);
  return std::string(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(bytes.numel()));
}

absl::Status rank0_status(const absl::Status& status) {
  if (collectives().world_size() == 1) return status;
  if (rank0_decides(status.ok())) return absl::OkStatus();
  const std::string message = rank0_decides(std::string(status.message()));
  if (is_writer()) return status;
  return absl::AbortedError(fmt::format("rank {}: stopped because rank 0 failed: {}", collectives().rank(), message));
}

Shard my_shard(int64_t n) { return shard_of(n, collectives().rank(), collectives().world_size()); }

torch::Tensor gather_rows(const torch::Tensor& local, int64_t n) {
  Collectives& group = collectives();
  const int world = group.world_size();
  if (world == 1) return local;
  // all_gather takes equal shapes: every share is padded to the longest, then trimmed.
  const int64_t longest = (n + world - 1) / world;
  const bool channels_last = local.dim() == 4 && local.size(0) > 0 && !local.is_contiguous() &&
                             local.is_contiguous(at::MemoryFormat::ChannelsLast);
  // Channels-last maps travel as N x H x W x D rows, so nothing is transposed on the way.
  const torch::Tensor rows = channels_last ? local.permute({0, 2, 3, 1}) : local;
  std::vector<int64_t> shape(rows.sizes().begin(), rows.sizes().end());
  shape[0] = longest;
  torch::Tensor padded = torch::zeros(shape, rows.options());
  padded.slice(0, 0, rows.size(0)).copy_(rows);
  const auto parts = group.all_gather(padded);
  std::vector<torch::Tensor> trimmed;
  for (int r = 0; r < world; ++r) trimmed.push_back(parts[r].slice(0, 0, shard_of(n, r, world).size()));
  torch::Tensor whole = torch::cat(trimmed);
  return channels_last ? whole.permute({0, 3, 1, 2}) : whole;
}

absl::Status check_replicas_identical(const std::vector<torch::Tensor>& tensors, const std::string& what) {
  Collectives& group = collectives();
  if (group.world_size() == 1 || tensors.empty()) return absl::OkStatus();
  std::vector<torch::Tensor> sums;
  for (const auto& t : tensors) {
    if (!t.defined()) continue;
    const auto values = t.detach().to(torch::kCPU, torch::kFloat64);
    sums.push_back(torch::stack({values.sum(), values.square().sum()}));
  }
  const torch::Tensor mine = torch::cat(sums);
  const auto all = group.all_gather(mine);
  for (int r = 0; r < group.world_size(); ++r) {
    if (!all[r].equal(all[0])) {
      return absl::InternalError(fmt::format("{}: the copies on rank 0 and rank {} differ (the ranks' states diverged)",
                                             what, r));
    }
  }
  return absl::OkStatus();
}

}  // namespace protoquant
