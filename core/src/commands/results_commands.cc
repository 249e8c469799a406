#include "results_commands.h"

#include <memory>

#include "command.h"

#include <algorithm>
#include <filesystem>

#include <fmt/format.h>

#include "protoquant/atomic_file.h"
#include "protoquant/leaderboard.h"
#include "protoquant/results_store.h"
#include "protoquant/status.h"

namespace protoquant {
namespace fs = std::filesystem;

namespace {

// experiment.output's default folder, where runs write their store unless a manifest says else.
const std::string kDefaultStore = (fs::path("runs") / kResultsStoreFile).string();

absl::StatusOr<RunQuery> parse_query(const std::vector<std::string>& where) {
  RunQuery query;
  for (const auto& text : where) {
    PQ_ASSIGN_OR_RETURN(ParamFilter filter, parse_param_filter(text));
    query.where.push_back(std::move(filter));
  }
  return query;
}

absl::StatusOr<std::vector<RunRecord>> read_runs(const std::string& db, const std::vector<std::string>& where) {
  PQ_ASSIGN_OR_RETURN(const RunQuery query, parse_query(where));
  ResultsStoreOptions options;
  options.create_if_missing = false;
  PQ_ASSIGN_OR_RETURN(const ResultsStore store, ResultsStore::open(db, options));
  return store.runs(query);
}

// The few numbers a run's line shows: its accuracy instance's values, as the leaderboard's
// default columns, named without the instance ("top5_accuracy=0.9900").
std::string key_metrics(const RunRecord& run) {
  std::string out;
  for (const auto& [key, value] : run.metrics) {
    std::string name;
    if (key == "accuracy") name = key;
    else if (key.rfind("accuracy.", 0) == 0) name = key.substr(9);
    else continue;
    out += fmt::format("{}{}={:.4f}", out.empty() ? "" : " ", name, value);
  }
  return out;
}

}  // namespace

ResultsCommands::ResultsCommands(CLI::App& app) : db_(kDefaultStore) {
  runs_command_ = app.add_subcommand("runs", "list the runs recorded in a results store, one line each");
  runs_command_->add_option("--db", db_, "results store")->capture_default_str();
  runs_command_->add_option("--where", where_, "only runs whose parameter KEY equals VALUE: KEY=VALUE (repeatable)");

  leaderboard_command_ = app.add_subcommand(
      "leaderboard", "compare recorded runs: one row per configuration, mean ± std over seeds");
  leaderboard_command_->add_option("--db", db_, "results store")->capture_default_str();
  leaderboard_command_->add_option("--where", where_, "only runs whose parameter KEY equals VALUE: KEY=VALUE (repeatable)");
  leaderboard_command_->add_option("--metrics", metrics_, "metric columns, comma-separated (default: accuracy.*)")
      ->delimiter(',');
  leaderboard_command_->add_option("--sort", sort_, "order rows by a metric: NAME ascending, -NAME descending");
  leaderboard_command_->add_option("--group-by", group_by_,
                                   "group by these parameters only, comma-separated (default: every varying "
                                   "parameter but run-specific ones: seed, name, output, threads, paths)")
      ->delimiter(',');
  leaderboard_command_->add_option("--format", format_, "md, csv, json or html")
      ->capture_default_str()->check(CLI::IsMember({"md", "csv", "json", "html"}));
  leaderboard_command_->add_option("--out", out_, "write to this file (atomically) instead of stdout");
}

bool ResultsCommands::selected() const { return runs_command_->parsed() || leaderboard_command_->parsed(); }

absl::Status ResultsCommands::run() const { return runs_command_->parsed() ? list_runs() : leaderboard(); }

absl::Status ResultsCommands::list_runs() const {
  PQ_ASSIGN_OR_RETURN(const std::vector<RunRecord> runs, read_runs(db_, where_));
  size_t id_width = 0, experiment_width = 0, metrics_width = 0;
  std::vector<std::string> metrics;
  for (const auto& run : runs) {
    metrics.push_back(key_metrics(run));
    id_width = std::max(id_width, run.run_id.size());
    experiment_width = std::max(experiment_width, run.experiment.size());
    metrics_width = std::max(metrics_width, metrics.back().size());
  }
  for (size_t i = 0; i < runs.size(); ++i) {
    const RunRecord& run = runs[i];
    fmt::print("{:<{}}  {}  {:<{}}  {:<{}}  {}\n", run.run_id, id_width, run.finished_at, run.experiment,
               experiment_width, metrics[i], metrics_width, run.run_dir);
  }
  return absl::OkStatus();
}

absl::Status ResultsCommands::leaderboard() const {
  PQ_ASSIGN_OR_RETURN(const std::vector<RunRecord> runs, read_runs(db_, where_));
  LeaderboardOptions options;
  options.metrics = metrics_;
  options.group_by = group_by_;
  if (!sort_.empty()) options.sort = parse_metric_sort(sort_);
  PQ_ASSIGN_OR_RETURN(const LeaderboardFormat format, parse_leaderboard_format(format_));
  auto board = build_leaderboard(runs, options);
  if (!board.ok()) return annotate(board.status(), db_);
  const std::string text = render_leaderboard(*board, format, fmt::format("ProtoQuant leaderboard: {}", db_));
  if (out_.empty()) {
    fmt::print("{}", text);
    return absl::OkStatus();
  }
  return write_file_atomic(out_, text);
}

}  // namespace protoquant

namespace protoquant {
namespace {

// `runs` and `leaderboard` as Commands; one ResultsCommands holds both commands' options.
class ResultsCommand : public Command {
 public:
  ResultsCommand(CLI::App* subcommand, std::shared_ptr<ResultsCommands> all) : Command(subcommand), all_(std::move(all)) {}
  bool needs_plugins() const override { return false; }
  absl::Status run(Registry& /*registry*/) override { return all_->run(); }

 private:
  std::shared_ptr<ResultsCommands> all_;
};

}  // namespace

std::vector<std::unique_ptr<Command>> make_results_commands(CLI::App& app) {
  auto all = std::make_shared<ResultsCommands>(app);
  std::vector<std::unique_ptr<Command>> commands;
  commands.push_back(std::make_unique<ResultsCommand>(all->runs_command(), all));
  commands.push_back(std::make_unique<ResultsCommand>(all->leaderboard_command(), all));
  return commands;
}

}  // namespace protoquant
