// `protoquant evaluate RUN [--metric NAME[:key=value,...]]... [--split SPLIT] [--dump DIR]`: metrics on a
// finished run, reusing every stage (run_evaluation.h); data-parallel like `run` (the pass is
// sharded, the metrics' states merged on rank 0).
#include <fmt/format.h>

#include "command.h"
#include "data_parallel_options.h"
#include "protoquant/process_group.h"
#include "protoquant/run_evaluation.h"
#include "protoquant/status.h"

namespace protoquant {
namespace {

class EvaluateCommand : public Command {
 public:
  EvaluateCommand(CLI::App& app, const GlobalOptions& global)
      : Command(app.add_subcommand("evaluate", "evaluate metrics on a finished run; trains nothing")), global_(global) {
    CLI::App* c = subcommand_;
    c->add_option("run_dir", run_dir_, "run folder")->required();
    c->add_option("--metric", options_.metrics,
                  "a metric to add: NAME or NAME:key=value,key=value (repeatable; default: the run's own)");
    c->add_option("--split", options_.split, "the split to evaluate (default: the run's eval_split)");
    c->add_option("--store", store_, "artifact store (default: the one the run recorded)");
    c->add_option("--db", db_, "results store (default: <run>/../results.db)");
    c->add_option("--dump", dump_, "write every metric's inputs as NumPy .npy files with a dump.json index here");
    data_parallel_.add_to(c);
  }

  absl::Status run(Registry& registry) override {
    PQ_ASSIGN_OR_RETURN(const bool launched, data_parallel_.launch_or_join(subcommand_, global_.argv));
    if (launched) return absl::OkStatus();
    options_.store = store_;
    options_.db = db_;
    options_.dump = dump_;
    PQ_ASSIGN_OR_RETURN(const nlohmann::json results, evaluate_run(run_dir_, options_, registry));
    if (!is_writer()) return absl::OkStatus();  // rank 0 prints
    for (const auto& [instance, values] : results["metrics"].items()) {
      if (!values.is_object()) continue;
      std::string line;
      for (const auto& [name, value] : values.items()) {
        if (value.is_number()) line += fmt::format("{}{}={:.6g}", line.empty() ? "" : " ", name, value.get<double>());
      }
      fmt::print("{:<22} {}\n", instance, line);
    }
    fmt::print("results: {}/results.json\n", run_dir_);
    return absl::OkStatus();
  }

 private:
  const GlobalOptions& global_;
  std::string run_dir_, store_, db_, dump_;
  EvaluateOptions options_;
  DataParallelOptions data_parallel_;
};

}  // namespace

std::unique_ptr<Command> make_evaluate_command(CLI::App& app, const GlobalOptions& global) {
  return std::make_unique<EvaluateCommand>(app, global);
}

}  // namespace protoquant
