// The data-parallel options of the commands that run stages (`run`, `evaluate`): torchrun's
// launch options, and the one decision they share: launch the local ranks (this process then only
// waits for them), join the group the environment names (a rank, started by the launcher, torchrun
// or srun), or run alone.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <absl/status/statusor.h>

#include "protoquant/launcher.h"

namespace protoquant {

class DataParallelOptions {
 public:
  void add_to(CLI::App* command);
  // True when this process launched the ranks (and they have finished: the command is done);
  // false when it joined a group or runs alone, and the command does its work.
  absl::StatusOr<bool> launch_or_join(const CLI::App* command, const std::vector<std::string>& argv) const;

 private:
  LaunchSettings launch_;
  int dist_timeout_ = 0;
};

}  // namespace protoquant
