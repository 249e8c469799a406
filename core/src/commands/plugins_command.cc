// `protoquant plugins`: every loaded component, by kind, with the library it came from.
#include <fmt/format.h>

#include "command.h"

namespace protoquant {
namespace {

class PluginsCommand : public Command {
 public:
  explicit PluginsCommand(CLI::App& app)
      : Command(app.add_subcommand("plugins", "list every loaded component, by kind, with its library")) {}

  absl::Status run(Registry& registry) override {
    for (const auto& kind : Registry::kinds()) {
      fmt::print("{}s:\n", kind);
      for (const auto& entry : registry.entries(kind)) {
        fmt::print("  {:<16} {}  [{}]\n", entry.name, entry.summary, entry.library);
      }
    }
    return absl::OkStatus();
  }
};

}  // namespace

std::unique_ptr<Command> make_plugins_command(CLI::App& app) { return std::make_unique<PluginsCommand>(app); }

}  // namespace protoquant
