// The `protoquant` command line. Each subcommand is a file of its own in commands/ (see
// commands/command.h); this file parses, loads the plugins and runs the chosen one.
#include <functional>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands/command.h"
#include "protoquant/build_info.h"
#include "protoquant/cpu_info.h"
#include "protoquant/plugin_loader.h"
#include "protoquant/process.h"
#include "protoquant/registry.h"

namespace pq = protoquant;

namespace {

// Every error line goes to stderr prefixed "error: " (one line per problem), exit code 1.
int fail(const absl::Status& status) {
  std::string message(status.message());
  size_t start = 0;
  while (start < message.size()) {
    size_t end = message.find('\n', start);
    if (end == std::string::npos) end = message.size();
    fmt::print(stderr, "error: {}\n", message.substr(start, end - start));
    start = end + 1;
  }
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ProtoQuant: interpretable image classification with quantized prototypical parts"};
  app.require_subcommand(1);
  // The line every benchmark script prints first: which build, on which CPU.
  app.set_version_flag("--version", std::function<std::string()>([] {
    return fmt::format("protoquant {} (commit {}, LibTorch {})\ncpu: {}", pq::toolkit_version(), pq::toolkit_commit(),
                       TORCH_VERSION, pq::cpu_info().describe());
  }));
  pq::GlobalOptions global;
  global.argv.assign(argv, argv + argc);
  app.add_option("--plugin", global.plugins, "load this plugin library too (repeatable)");
  const auto commands = pq::make_commands(app, global);
  CLI11_PARSE(app, argc, argv);

  pq::Command* chosen = nullptr;
  for (const auto& command : commands) {
    if (command->selected()) chosen = command.get();
  }
  if (chosen == nullptr) return fail(absl::InvalidArgumentError("no command given (see --help)"));
  pq::Registry registry;
  if (chosen->needs_plugins()) {
    pq::tune_allocator();
    if (auto status = pq::load_default_plugins(registry); !status.ok()) return fail(status);
    for (const auto& library : global.plugins) {
      if (auto status = pq::load_plugin(library, registry); !status.ok()) return fail(status);
    }
  }
  const absl::Status status = chosen->run(registry);
  return status.ok() ? 0 : fail(status);
}
