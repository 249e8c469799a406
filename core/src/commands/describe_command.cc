// `protoquant describe NAME`: a component's parameters (type, default, range, doc).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "command.h"

namespace protoquant {
namespace {

std::string describe_range(const ParamSpec& spec) {
  if (!spec.choices.empty()) return fmt::format("{}", fmt::join(spec.choices, "|"));
  if (spec.minimum && spec.maximum) return fmt::format("[{}, {}]", *spec.minimum, *spec.maximum);
  if (spec.minimum) return fmt::format(">= {}", *spec.minimum);
  if (spec.maximum) return fmt::format("<= {}", *spec.maximum);
  return "";
}

class DescribeCommand : public Command {
 public:
  explicit DescribeCommand(CLI::App& app) : Command(app.add_subcommand("describe", "print a component's parameters")) {
    subcommand_->add_option("name", name_, "component name, e.g. vq")->required();
  }

  absl::Status run(Registry& registry) override {
    auto found = registry.find_any(name_);
    if (found.empty()) {
      std::vector<std::string> all;
      for (const auto& kind : Registry::kinds())
        for (const auto& n : registry.names(kind)) all.push_back(n);
      const std::string hint = closest_match(name_, all);
      return absl::NotFoundError(fmt::format("no component named '{}'{}", name_,
                                             hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint)));
    }
    for (const auto& entry : found) {
      fmt::print("{} '{}': {}\n  library: {}\n", entry.kind, entry.name, entry.summary, entry.library);
      fmt::print("  {:<18} {:<14} {:<14} {:<18} {}\n", "parameter", "type", "default", "range", "doc");
      for (const auto& spec : entry.schema->specs()) {
        fmt::print("  {:<18} {:<14} {:<14} {:<18} {}\n", spec.name, to_string(spec.type),
                   spec.required ? "(required)" : format_value(spec.default_value), describe_range(spec), spec.doc);
      }
    }
    return absl::OkStatus();
  }

 private:
  std::string name_;
};

}  // namespace

std::unique_ptr<Command> make_describe_command(CLI::App& app) { return std::make_unique<DescribeCommand>(app); }

}  // namespace protoquant
