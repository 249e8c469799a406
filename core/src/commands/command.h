// One subcommand of the `protoquant` CLI: it adds its options to the app when it is made, and
// main() runs the one the parsed command line chose. Each lives in a file of its own here
// (commands/<name>_command.cc, CaBRNet's apps/ habit); make_commands() lists them.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <absl/status/status.h>

#include "protoquant/registry.h"

namespace protoquant {

// What main() parses before the subcommand and the commands may need.
struct GlobalOptions {
  std::vector<std::string> plugins;  // --plugin LIB, repeatable
  std::vector<std::string> argv;     // the whole command line (the data-parallel launcher reruns it)
};

class Command {
 public:
  explicit Command(CLI::App* subcommand) : subcommand_(subcommand) {}
  virtual ~Command() = default;
  Command(const Command&) = delete;
  Command& operator=(const Command&) = delete;

  bool selected() const { return subcommand_->parsed(); }
  // Commands that read no component (the results store) answer before any plugin is loaded.
  virtual bool needs_plugins() const { return true; }
  // Errors are one line each; main() prints them and exits with 1.
  virtual absl::Status run(Registry& registry) = 0;

 protected:
  CLI::App* subcommand_;
};

// Number checks that say what they want: CLI11's PositiveNumber and NonNegativeNumber report
// the double's whole range ("not in range 0.000000 to 1797693134862315...", 300 digits).
inline CLI::Validator positive_number() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(text, value)) return "'" + text + "' is not a number";
        return value > 0 ? std::string() : "must be above 0 (got " + text + ")";
      },
      "POSITIVE");
}
inline CLI::Validator non_negative_number() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(text, value)) return "'" + text + "' is not a number";
        return value >= 0 ? std::string() : "must be 0 or more (got " + text + ")";
      },
      "NONNEGATIVE");
}

// Every command, in the order `protoquant --help` lists them; their options bind to the objects,
// which must outlive parsing.
std::vector<std::unique_ptr<Command>> make_commands(CLI::App& app, const GlobalOptions& global);

// The factories, one per file.
std::unique_ptr<Command> make_plugins_command(CLI::App& app);
std::unique_ptr<Command> make_check_plugin_command(CLI::App& app);
std::unique_ptr<Command> make_describe_command(CLI::App& app);
std::unique_ptr<Command> make_validate_command(CLI::App& app);
std::unique_ptr<Command> make_run_command(CLI::App& app, const GlobalOptions& global);
std::unique_ptr<Command> make_evaluate_command(CLI::App& app, const GlobalOptions& global);
std::unique_ptr<Command> make_explain_command(CLI::App& app);
std::unique_ptr<Command> make_report_command(CLI::App& app);
std::unique_ptr<Command> make_edit_command(CLI::App& app);
std::unique_ptr<Command> make_data_command(CLI::App& app);
std::vector<std::unique_ptr<Command>> make_results_commands(CLI::App& app);  // runs, leaderboard
std::vector<std::unique_ptr<Command>> make_bench_commands(CLI::App& app);    // bench head|quantizer|loader

}  // namespace protoquant
