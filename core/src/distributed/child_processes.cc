#include "protoquant/child_processes.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

extern char** environ;

namespace protoquant {
namespace {

// What the handler may touch: lock-free atomics only (it runs between any two instructions).
constexpr size_t kMaxChildren = 1024;
std::array<std::atomic<pid_t>, kMaxChildren> g_children{};
std::atomic<int> g_received{0};
constexpr std::array<int, 3> kForwarded = {SIGINT, SIGTERM, SIGHUP};
std::array<struct sigaction, kForwarded.size()> g_previous{};

// Which of kForwarded this process forwards: not those it inherited as ignored (`nohup`, a
// background job of a script), which stay ignored here and in the children.
std::array<bool, kForwarded.size()> g_forwarding{};

void forward(int signal) {
  const int saved_errno = errno;  // kill() may set it; the interrupted code may be reading it
  g_received.store(signal);
  for (auto& child : g_children) {
    const pid_t pid = child.load();
    if (pid > 0) ::kill(pid, signal);
  }
  errno = saved_errno;
}

}  // namespace

ChildProcesses::ChildProcesses() {
  g_received.store(0);
  for (auto& child : g_children) child.store(0);
  struct sigaction action {};
  action.sa_handler = forward;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // no SA_RESTART: waitpid returns EINTR and the wait loops look again
  for (size_t i = 0; i < kForwarded.size(); ++i) {
    ::sigaction(kForwarded[i], nullptr, &g_previous[i]);
    g_forwarding[i] = g_previous[i].sa_handler != SIG_IGN;
    if (g_forwarding[i]) ::sigaction(kForwarded[i], &action, nullptr);
  }
}

ChildProcesses::~ChildProcesses() {
  for (size_t i = 0; i < kForwarded.size(); ++i) ::sigaction(kForwarded[i], &g_previous[i], nullptr);
  for (auto& child : g_children) child.store(0);
}

absl::StatusOr<pid_t> ChildProcesses::start_self(const std::vector<std::string>& argv,
                                                 const std::vector<std::string>& environment) {
  auto slot = std::find_if(g_children.begin(), g_children.end(), [](const auto& c) { return c.load() == 0; });
  if (slot == g_children.end()) return absl::ResourceExhaustedError("too many child processes");
  std::vector<std::string> env_owned = environment;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    const std::string name = entry.substr(0, entry.find('='));
    bool replaced = false;
    for (const auto& added : environment) replaced = replaced || added.rfind(name + "=", 0) == 0;
    if (!replaced) env_owned.push_back(entry);
  }
  std::vector<char*> args, env;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  for (const auto& e : env_owned) env.push_back(const_cast<char*>(e.c_str()));
  env.push_back(nullptr);
  // The child starts with the default dispositions, not this process's forwarding handler.
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t defaults;
  sigemptyset(&defaults);
  for (size_t i = 0; i < kForwarded.size(); ++i) {
    if (g_forwarding[i]) sigaddset(&defaults, kForwarded[i]);  // an ignored one stays ignored
  }
  posix_spawnattr_setsigdefault(&attributes, &defaults);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGDEF);
  pid_t pid = 0;
  const int error = ::posix_spawn(&pid, "/proc/self/exe", nullptr, &attributes, args.data(), env.data());
  posix_spawnattr_destroy(&attributes);
  if (error != 0) return absl::InternalError(fmt::format("cannot start {}: {}", argv.front(), std::strerror(error)));
  slot->store(pid);
  // A signal that came while the child was being started found no pid to forward to.
  if (const int signal = g_received.load(); signal != 0) ::kill(pid, signal);
  return pid;
}

pid_t ChildProcesses::wait_any(int& status, bool block) {
  while (true) {
    const pid_t pid = ::waitpid(-1, &status, block ? 0 : WNOHANG);
    if (pid < 0 && errno == EINTR) continue;  // a forwarded signal; the children end on their own
    if (pid > 0) {
      for (auto& child : g_children) {
        pid_t expected = pid;
        child.compare_exchange_strong(expected, 0);
      }
    }
    return pid;
  }
}

void ChildProcesses::signal_all(int signal) {
  for (auto& child : g_children) {
    const pid_t pid = child.load();
    if (pid > 0) ::kill(pid, signal);
  }
}

int ChildProcesses::received() { return g_received.load(); }

std::string signal_text(int signal) { return fmt::format("signal {} ({})", signal, ::strsignal(signal)); }

}  // namespace protoquant
