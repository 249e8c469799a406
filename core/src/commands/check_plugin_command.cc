// `protoquant check-plugin LIB.so`: the conformance suite of its kind (protoquant/conformance.h)
// on every component the library registers, one line per check; non-zero exit on any failure.
#include <filesystem>

#include <fmt/format.h>

#include "command.h"
#include "protoquant/conformance.h"
#include "protoquant/plugin_loader.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;

class CheckPluginCommand : public Command {
 public:
  explicit CheckPluginCommand(CLI::App& app)
      : Command(app.add_subcommand("check-plugin", "run the conformance suite on every component a plugin library "
                                                   "registers (shapes, determinism, save/load, gradients, errors)")) {
    subcommand_->add_option("library", library_, "the plugin's .so")->required();
  }

  absl::Status run(Registry& registry) override {
    PQ_RETURN_IF_ERROR(load_plugin(library_, registry));  // a no-op for a library loaded already
    std::error_code ec;
    const std::string path = fs::weakly_canonical(library_, ec).string();
    const std::vector<ConformanceCheck> checks = check_library(registry, path);
    int failed = 0, skipped = 0;
    for (const auto& c : checks) {
      fmt::print("{}\n", c.line());
      failed += c.failed() ? 1 : 0;
      skipped += c.outcome == ConformanceCheck::Outcome::kSkipped ? 1 : 0;
    }
    if (failed > 0) {
      return absl::FailedPreconditionError(
          fmt::format("{}: {} of {} conformance checks failed", library_, failed, checks.size()));
    }
    fmt::print("{}: all {} checks passed ({} skipped)\n", library_, checks.size() - skipped, skipped);
    return absl::OkStatus();
  }

 private:
  std::string library_;
};

}  // namespace

std::unique_ptr<Command> make_check_plugin_command(CLI::App& app) { return std::make_unique<CheckPluginCommand>(app); }

}  // namespace protoquant
