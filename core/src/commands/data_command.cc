// `protoquant data MANIFEST`: the dataset's splits, classes, annotations and every bad sample.
#include "commands/command.h"
#include "commands/data_tools.h"
#include "protoquant/manifest.h"
#include "protoquant/status.h"

namespace protoquant {
namespace {

class DataCommand : public Command {
 public:
  explicit DataCommand(CLI::App& app)
      : Command(app.add_subcommand("data", "load the manifest's dataset and summarise it (splits, annotations, bad samples)")) {
    subcommand_->add_option("manifest", manifest_, "experiment manifest (TOML)")->required();
    subcommand_->add_option("--set", overrides_, "override a manifest value: dotted.key=value");
  }

  absl::Status run(Registry& registry) override {
    PQ_ASSIGN_OR_RETURN(const ExperimentSpec spec, load_experiment(manifest_, overrides_, registry));
    return print_data_summary(spec, registry);
  }

 private:
  std::string manifest_;
  std::vector<std::string> overrides_;
};

}  // namespace

std::unique_ptr<Command> make_data_command(CLI::App& app) { return std::make_unique<DataCommand>(app); }

}  // namespace protoquant
