// `protoquant data MANIFEST`: the dataset's splits, classes, annotations and every bad sample.
#include <fmt/format.h>

#include "command.h"
#include "data_tools.h"
#include "report/pictures.h"
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
    subcommand_->add_option("--preview", preview_,
                            "draw a grid of samples per class (part keypoints, boxes) into this PNG file");
    subcommand_->add_option("--split", split_, "the split to preview")->capture_default_str();
    subcommand_->add_option("--per-class", per_class_, "samples per class in the preview")
        ->capture_default_str()
        ->check(CLI::Range(1, 64));
    subcommand_->add_flag("--augmented", augmented_, "preview through the training transform instead of the eval one");
  }

  absl::Status run(Registry& registry) override {
    PQ_ASSIGN_OR_RETURN(const ExperimentSpec spec, load_experiment(manifest_, overrides_, registry));
    PQ_ASSIGN_OR_RETURN(const std::shared_ptr<Dataset> dataset, open_dataset(spec, registry));
    PQ_RETURN_IF_ERROR(print_data_summary(spec, *dataset));
    if (preview_.empty()) return absl::OkStatus();
    PQ_ASSIGN_OR_RETURN(const Preview preview, data_preview(*dataset, split_, per_class_, augmented_));
    PQ_RETURN_IF_ERROR(write_png(preview_, preview.image));
    fmt::print("preview: {} ({} samples, {} x {} px)\n", preview_, preview.cells.size(), preview.image.cols,
               preview.image.rows);
    return absl::OkStatus();
  }

 private:
  std::string manifest_, preview_, split_ = "train";
  std::vector<std::string> overrides_;
  int64_t per_class_ = 8;
  bool augmented_ = false;
};

}  // namespace

std::unique_ptr<Command> make_data_command(CLI::App& app) { return std::make_unique<DataCommand>(app); }

}  // namespace protoquant
