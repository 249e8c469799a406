// `protoquant validate MANIFEST`: every error of a manifest (or of every member of a sweep),
// before any work starts.
#include <fmt/format.h>

#include "command.h"
#include "protoquant/sweep.h"

namespace protoquant {
namespace {

class ValidateCommand : public Command {
 public:
  explicit ValidateCommand(CLI::App& app)
      : Command(app.add_subcommand("validate", "check a manifest (every member of a sweep) without running it")) {
    subcommand_->add_option("manifest", manifest_, "experiment manifest (TOML)")->required();
    subcommand_->add_option("--set", overrides_, "override a manifest value: dotted.key=value");
  }

  absl::Status run(Registry& registry) override {
    auto members = load_sweep(manifest_, overrides_, registry);
    if (!members.ok()) return members.status();
    const auto& first = members->front().spec;
    const bool sweep = members->size() > 1 || !members->front().assignment.empty();
    fmt::print("{}: ok (dataset {}, backbone {}, quantizer {}, head {}{})\n", manifest_, first.dataset.type,
               first.backbone.type, first.quantizer.type.empty() ? "none" : first.quantizer.type, first.head.type,
               sweep ? fmt::format("; a sweep of {} members", members->size()) : "");
    return absl::OkStatus();
  }

 private:
  std::string manifest_;
  std::vector<std::string> overrides_;
};

}  // namespace

std::unique_ptr<Command> make_validate_command(CLI::App& app) { return std::make_unique<ValidateCommand>(app); }

}  // namespace protoquant
