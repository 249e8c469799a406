// The CLI's results-store commands: `protoquant runs` (one line per recorded run) and
// `protoquant leaderboard` (runs grouped into configurations, as md, csv, json or html).
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <absl/status/status.h>

namespace protoquant {

class ResultsCommands {
 public:
  // Adds both subcommands to `app`; the options are bound to this object, which must outlive
  // parsing.
  explicit ResultsCommands(CLI::App& app);
  ResultsCommands(const ResultsCommands&) = delete;
  ResultsCommands& operator=(const ResultsCommands&) = delete;

  // Whether the parsed command line chose one of them.
  bool selected() const;
  CLI::App* runs_command() const { return runs_command_; }
  CLI::App* leaderboard_command() const { return leaderboard_command_; }
  // Runs the chosen one; errors are one line each, naming the store's file.
  absl::Status run() const;

 private:
  absl::Status list_runs() const;
  absl::Status leaderboard() const;

  CLI::App* runs_command_ = nullptr;
  CLI::App* leaderboard_command_ = nullptr;
  std::string db_;
  std::vector<std::string> where_;
  std::vector<std::string> metrics_;
  std::string sort_;
  std::vector<std::string> group_by_;
  std::string format_ = "md";
  std::string out_;
};

}  // namespace protoquant
