#include "protoquant/launcher.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <thread>

#include <fmt/format.h>

#include "protoquant/child_processes.h"

namespace protoquant {

std::optional<int> free_local_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return std::nullopt;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  std::optional<int> port;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  ::close(fd);
  return port;
}

namespace {

std::string describe_exit(int status) {
  if (WIFSIGNALED(status)) {
    const int signal = WTERMSIG(status);
    return fmt::format("was killed by signal {} ({})", signal, ::strsignal(signal));
  }
  return fmt::format("exited with status {}", WEXITSTATUS(status));
}

int survivors_timeout_seconds() {
  const char* value = std::getenv("PROTOQUANT_DIST_TIMEOUT");
  const int timeout = value ? std::atoi(value) : 300;
  return std::max(1, timeout) + 30;
}

}  // namespace

std::vector<std::string> without_launch_options(const std::vector<std::string>& argv) {
  static const char* kOptions[] = {"--nproc-per-node", "--nnodes", "--node-rank", "--master-addr", "--master-port"};
  std::vector<std::string> out;
  for (size_t i = 0; i < argv.size(); ++i) {
    bool skip = false;
    for (const char* option : kOptions) {
      if (argv[i] == option) {
        skip = true;
        ++i;  // its value
      } else if (argv[i].rfind(std::string(option) + "=", 0) == 0) {
        skip = true;
      }
      if (skip) break;
    }
    if (!skip) out.push_back(argv[i]);
  }
  return out;
}

absl::Status launch_local_ranks(const std::vector<std::string>& argv, const LaunchSettings& s) {
  if (s.nproc_per_node < 1 || s.nnodes < 1 || s.node_rank < 0 || s.node_rank >= s.nnodes) {
    return absl::InvalidArgumentError(fmt::format("--nproc-per-node {} --nnodes {} --node-rank {}: need N >= 1, M >= 1 "
                                                  "and 0 <= R < M", s.nproc_per_node, s.nnodes, s.node_rank));
  }
  int port = s.master_port;
  if (port == 0) {
    if (s.nnodes > 1) return absl::InvalidArgumentError("--nnodes > 1 needs --master-port (the same on every node)");
    const auto chosen = free_local_port();
    if (!chosen) return absl::UnavailableError("no free local port for the data-parallel store");
    port = *chosen;
  }
  const int world = s.nproc_per_node * s.nnodes;
  // Ctrl-C, `timeout` or a scheduler's SIGTERM reaches every rank, not only this launcher.
  ChildProcesses children;
  std::map<pid_t, int> ranks;  // pid -> global rank
  for (int local = 0; local < s.nproc_per_node && !ChildProcesses::received(); ++local) {
    const int rank = s.node_rank * s.nproc_per_node + local;
    auto pid = children.start_self(argv, {fmt::format("RANK={}", rank), fmt::format("WORLD_SIZE={}", world),
                                          fmt::format("LOCAL_RANK={}", local),
                                          fmt::format("LOCAL_WORLD_SIZE={}", s.nproc_per_node),
                                          fmt::format("MASTER_ADDR={}", s.master_addr), fmt::format("MASTER_PORT={}", port)});
    if (!pid.ok()) {
      children.signal_all(SIGKILL);
      for (int status = 0; children.wait_any(status) > 0;) {
      }
      return absl::InternalError(fmt::format("starting rank {}: {}", rank, std::string(pid.status().message())));
    }
    ranks[*pid] = rank;
  }
  if (ranks.empty()) {
    // Stopped before the first rank started: nothing ran, which is no success.
    return absl::CancelledError(fmt::format("data-parallel run stopped by {} before its ranks started",
                                            signal_text(ChildProcesses::received())));
  }
  fmt::print(stderr, "data-parallel: {} process(es) on this node, ranks {}..{} of {}, store {}:{}\n", s.nproc_per_node,
             s.node_rank * s.nproc_per_node, s.node_rank * s.nproc_per_node + s.nproc_per_node - 1, world,
             s.master_addr, port);
  std::optional<std::string> failure;
  std::optional<std::chrono::steady_clock::time_point> deadline;
  while (!ranks.empty()) {
    int status = 0;
    const pid_t pid = children.wait_any(status, /*block=*/!failure);
    if (pid > 0) {
      const int rank = ranks[pid];
      ranks.erase(pid);
      const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      if (!ok && !failure) {
        failure = ChildProcesses::received() ? fmt::format("stopped by {}", signal_text(ChildProcesses::received()))
                                             : fmt::format("rank {} {}", rank, describe_exit(status));
        deadline = std::chrono::steady_clock::now() + std::chrono::seconds(survivors_timeout_seconds());
      }
      continue;
    }
    if (pid < 0) break;
    if (failure && std::chrono::steady_clock::now() > *deadline) {
      // The survivors did not stop on their own within the group's timeout.
      children.signal_all(SIGKILL);
      *failure += "; stopped the ranks still running";
      deadline = std::chrono::steady_clock::now() + std::chrono::hours(1);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (failure) return absl::AbortedError(fmt::format("data-parallel run failed: {}", *failure));
  return absl::OkStatus();
}

}  // namespace protoquant
