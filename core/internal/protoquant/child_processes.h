// Child processes that must not outlive the command that started them: a sweep's members under
// --jobs, a node's data-parallel ranks. While a ChildProcesses lives, SIGINT, SIGTERM and SIGHUP
// sent to this process (Ctrl-C, `timeout`, a scheduler's preemption, a closed terminal) are passed
// on to every child it started; the parent then waits for them and reports the signal, so one
// signal stops the whole run instead of orphaning children that keep training.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include <absl/status/statusor.h>

namespace protoquant {

class ChildProcesses {
 public:
  ChildProcesses();   // installs the forwarding handlers (one instance at a time)
  ~ChildProcesses();  // restores the handlers that were there before
  ChildProcesses(const ChildProcesses&) = delete;
  ChildProcesses& operator=(const ChildProcesses&) = delete;

  // Starts this same executable (/proc/self/exe) with `argv` (argv[0] included) and this
  // process's environment with `environment`'s "NAME=value" entries set. A signal that arrived
  // before the start is forwarded at once.
  absl::StatusOr<pid_t> start_self(const std::vector<std::string>& argv,
                                   const std::vector<std::string>& environment = {});
  // Waits for any child (blocking, or not with `block` false: 0 when none has ended). Returns
  // its pid and fills `status` (waitpid's); -1 when none is left.
  pid_t wait_any(int& status, bool block = true);
  // Sends `signal` to every child still running.
  void signal_all(int signal);

  // The signal received (SIGTERM, ...), 0 when none: a caller starts nothing more.
  static int received();
};

// "signal 15 (Terminated)", for messages.
std::string signal_text(int signal);

}  // namespace protoquant
