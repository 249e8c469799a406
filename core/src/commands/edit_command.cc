// `protoquant edit RUN_DIR ...`: stage 4, editing a finished run's head (edit.h).
#include <fmt/format.h>

#include "command.h"
#include "protoquant/edit.h"
#include "protoquant/status.h"

namespace protoquant {
namespace {

class EditCommand : public Command {
 public:
  explicit EditCommand(CLI::App& app)
      : Command(app.add_subcommand("edit", "edit a finished run's head; writes <run>/edits/<name>/")) {
    CLI::App* c = subcommand_;
    c->add_option("run_dir", run_dir_, "run folder")->required();
    c->add_option("--limit-k", limit_k_, "keep the k highest-weighted prototypes per class")->check(positive_number());
    c->add_flag("--prune-inactive", edit_.prune_inactive, "delete prototypes that no class uses");
    c->add_option("--threshold", edit_.threshold, "a class uses a prototype when its weight is above this")
        ->capture_default_str()
        ->check(non_negative_number());
    c->add_flag("--renormalize", edit_.renormalize,
                "with --prune-inactive: drop pruned prototypes from the softmax too (cheaper, predictions may change)");
    c->add_option("--disable-prototype", edit_.disable_prototypes, "zero prototype P for every class (repeatable)");
    c->add_option("--zero-weight", zero_weights_, "zero the weight of prototype P for CLASS: CLASS:P (repeatable)");
    c->add_option("--name", edit_.name, "edit folder name (default: derived from the edits)");
  }

  absl::Status run(Registry& registry) override {
    if (limit_k_ > 0) edit_.limit_k = limit_k_;
    for (const auto& text : zero_weights_) {
      PQ_ASSIGN_OR_RETURN(auto pair, parse_class_prototype(text));
      edit_.zero_weights.push_back(pair);
    }
    PQ_ASSIGN_OR_RETURN(const nlohmann::json record, edit_run(run_dir_, edit_, registry));
    const auto& before = record["before"];
    const auto& after = record["after"];
    fmt::print("{:<10} {:>9} {:>11} {:>12} {:>11}\n", "", "accuracy", "local size", "global size", "prototypes");
    for (const auto* row : {&before, &after}) {
      fmt::print("{:<10} {:>9.4f} {:>11.2f} {:>12} {:>11}\n", row == &before ? "before" : "after",
                 (*row)["accuracy"].get<double>(), (*row)["local_size"].get<double>(),
                 (*row)["global_size"].get<int64_t>(), (*row)["prototypes"].get<int64_t>());
    }
    fmt::print("edited model: {}\n", record["folder"].get<std::string>());
    return absl::OkStatus();
  }

 private:
  EditOptions edit_;
  std::string run_dir_;
  std::vector<std::string> zero_weights_;
  int64_t limit_k_ = 0;
};

}  // namespace

std::unique_ptr<Command> make_edit_command(CLI::App& app) { return std::make_unique<EditCommand>(app); }

}  // namespace protoquant
