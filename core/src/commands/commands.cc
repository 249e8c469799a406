#include "command.h"

namespace protoquant {

std::vector<std::unique_ptr<Command>> make_commands(CLI::App& app, const GlobalOptions& global) {
  std::vector<std::unique_ptr<Command>> commands;
  commands.push_back(make_plugins_command(app));
  commands.push_back(make_check_plugin_command(app));
  commands.push_back(make_describe_command(app));
  commands.push_back(make_validate_command(app));
  commands.push_back(make_run_command(app, global));
  commands.push_back(make_evaluate_command(app, global));
  commands.push_back(make_explain_command(app));
  commands.push_back(make_report_command(app));
  commands.push_back(make_edit_command(app));
  commands.push_back(make_data_command(app));
  for (auto& command : make_results_commands(app)) commands.push_back(std::move(command));
  for (auto& command : make_bench_commands(app)) commands.push_back(std::move(command));
  return commands;
}

}  // namespace protoquant
