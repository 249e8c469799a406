// Building a leaderboard: which metrics and parameters become columns, how runs group into rows,
// the statistics of each cell and the row order. Rendering is leaderboard_render.cc.
#include "protoquant/leaderboard.h"

#include <algorithm>
#include <tuple>
#include <cmath>
#include <map>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "protoquant/params.h"
#include "protoquant/status.h"

namespace protoquant {

namespace {

bool starts_with(std::string_view text, std::string_view prefix) { return text.substr(0, prefix.size()) == prefix; }
bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

template <class T>
void append_unique(std::vector<T>& list, const T& item) {
  if (std::find(list.begin(), list.end(), item) == list.end()) list.push_back(item);
}

// The metric instance shown when --metrics is not given: the classification accuracy is what an
// ablation is read for; the other instances (codebook usage, sizes) are a --metrics away.
constexpr std::string_view kDefaultMetricInstance = "accuracy";

std::vector<std::string> default_metrics(const std::vector<std::string>& keys) {
  std::vector<std::string> chosen;
  const std::string prefix = std::string(kDefaultMetricInstance) + ".";
  for (const auto& key : keys) {
    if (key == kDefaultMetricInstance || starts_with(key, prefix)) chosen.push_back(key);
  }
  return chosen.empty() ? keys : chosen;
}

MetricSummary summarize(const std::vector<double>& values) {
  MetricSummary summary;
  summary.n = static_cast<int64_t>(values.size());
  if (values.empty()) return summary;
  double sum = 0;
  for (double value : values) sum += value;
  summary.mean = sum / values.size();
  // Equal values have no spread; the two-pass sum would give rounding noise (1e-16) instead.
  const bool all_equal = std::all_of(values.begin(), values.end(), [&](double v) { return v == values.front(); });
  if (values.size() > 1 && !all_equal) {
    double squares = 0;
    for (double value : values) squares += (value - summary.mean) * (value - summary.mean);
    summary.std = std::sqrt(squares / (values.size() - 1));
  }
  return summary;
}

// Parameter order: numbers by value (so 64 comes before 256), other values by their text, a
// missing value last.
int compare_params(const std::optional<RunParameter>& a, const std::optional<RunParameter>& b) {
  if (!a || !b) return a ? -1 : (b ? 1 : 0);
  if (a->value.is_number() && b->value.is_number()) {
    const double x = a->value.get<double>(), y = b->value.get<double>();
    return x < y ? -1 : (y < x ? 1 : 0);
  }
  return a->text.compare(b->text) < 0 ? -1 : (a->text == b->text ? 0 : 1);
}

bool params_before(const LeaderboardRow& a, const LeaderboardRow& b) {
  for (size_t i = 0; i < a.params.size(); ++i) {
    if (const int order = compare_params(a.params[i], b.params[i]); order != 0) return order < 0;
  }
  return false;
}

}  // namespace

MetricSort parse_metric_sort(std::string_view text) {
  if (!text.empty() && (text[0] == '-' || text[0] == '+')) return {std::string(text.substr(1)), text[0] == '-'};
  return {std::string(text), false};
}

absl::StatusOr<std::string> resolve_metric(const std::string& name, const std::vector<std::string>& keys) {
  if (name.empty()) return absl::InvalidArgumentError("empty metric name");
  if (std::find(keys.begin(), keys.end(), name) != keys.end()) return name;
  std::vector<std::string> matches;
  for (const auto& key : keys) {
    if (ends_with(key, "." + name)) matches.push_back(key);
  }
  if (matches.size() == 1) return matches.front();
  if (matches.size() > 1) {
    return absl::InvalidArgumentError(
        fmt::format("metric '{}' is ambiguous: {} (name one in full)", name, fmt::join(matches, ", ")));
  }
  if (keys.empty()) return absl::InvalidArgumentError(fmt::format("unknown metric '{}': the selected runs recorded none", name));
  return absl::InvalidArgumentError(fmt::format("unknown metric '{}' (recorded: {})", name, fmt::join(keys, ", ")));
}

bool run_specific_parameter(const std::string& key, const RunParameter& value) {
  static const std::set<std::string> kRunKeys = {"experiment.seed",    "experiment.name",           "experiment.output",
                                                 "experiment.threads", "experiment.store",          "experiment.store_features",
                                                 "plugins"};
  if (kRunKeys.count(key) > 0) return true;
  // What was measured (the [[metrics]] entries), not the model: `protoquant evaluate` adds some.
  if (starts_with(key, "metrics.")) return true;
  if (starts_with(key, "report.")) return true;  // what the report shows, not the model
  return value.value.is_string() && starts_with(value.text, "/");
}

// A run recorded again with the same stage keys (a rerun that reused every stage) is the same
// experiment: it counts once, as its latest record, or a rerun would shrink every std to 0.
// So does a run of the same configuration and seed whose keys differ.
std::vector<RunRecord> distinct_experiments(const std::vector<RunRecord>& recorded) {
  std::map<std::string, size_t> latest;
  for (size_t i = 0; i < recorded.size(); ++i) {
    std::string identity;
    for (const auto& [stage, record] : recorded[i].stages) {
      if (!record.key.empty()) identity += stage + "=" + record.key + ";";
    }
    latest[identity.empty() ? "run:" + recorded[i].run_id : identity] = i;
  }
  // The same configuration and seed recorded again with other stage keys (a rebuilt toolkit, a
  // changed plugin) is one experiment measured twice, not two seeds: its latest record counts.
  std::map<std::string, size_t> latest_of_configuration;
  for (const auto& [identity, index] : latest) {
    std::string configuration;
    for (const auto& [key, value] : recorded[index].params) {
      if (key == "experiment.seed" || !run_specific_parameter(key, value)) configuration += key + "=" + value.text + ";";
    }
    auto [slot, added] = latest_of_configuration.emplace(configuration, index);
    if (!added) slot->second = std::max(slot->second, index);
  }
  std::vector<size_t> kept;
  for (const auto& [configuration, index] : latest_of_configuration) kept.push_back(index);
  std::vector<RunRecord> runs;
  for (size_t index : kept) runs.push_back(recorded[index]);
  // "Latest" above is the order of recording (`recorded`'s); the rows list their runs by time,
  // then id, so a table reads the same however the store broke a tie within one second.
  std::sort(runs.begin(), runs.end(), [](const RunRecord& a, const RunRecord& b) {
    return std::tie(a.finished_at, a.run_id) < std::tie(b.finished_at, b.run_id);
  });
  return runs;
}

absl::StatusOr<Leaderboard> build_leaderboard(const std::vector<RunRecord>& recorded, const LeaderboardOptions& options) {
  const std::vector<RunRecord> runs = distinct_experiments(recorded);
  if (runs.empty()) return absl::NotFoundError("no recorded run matches");
  Leaderboard board;
  board.run_count = runs.size();

  std::set<std::string> metric_set, param_set;
  for (const auto& run : runs) {
    for (const auto& [key, value] : run.metrics) metric_set.insert(key);
    for (const auto& [key, value] : run.params) param_set.insert(key);
  }
  const std::vector<std::string> metric_keys(metric_set.begin(), metric_set.end());
  const std::vector<std::string> param_keys(param_set.begin(), param_set.end());

  if (options.metrics.empty()) {
    board.metric_columns = default_metrics(metric_keys);
  } else {
    for (const auto& name : options.metrics) {
      PQ_ASSIGN_OR_RETURN(const std::string key, resolve_metric(name, metric_keys));
      append_unique(board.metric_columns, key);
    }
  }
  if (options.sort) {
    PQ_ASSIGN_OR_RETURN(const std::string key, resolve_metric(options.sort->metric, metric_keys));
    append_unique(board.metric_columns, key);  // a sort key is shown, so the order can be seen
    board.sort = MetricSort{key, options.sort->descending};
  }

  if (!options.group_by.empty()) {
    for (const auto& key : options.group_by) {
      if (param_set.count(key) == 0) {
        const std::string hint = closest_match(key, param_keys);
        return absl::InvalidArgumentError(fmt::format("--group-by: no selected run has a parameter '{}'{}", key,
                                                      hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint)));
      }
      append_unique(board.param_columns, key);
    }
  } else {
    for (const auto& key : param_keys) {
      bool varies = false, run_specific = false;
      const auto first = runs.front().params.find(key);
      for (const auto& run : runs) {
        const auto found = run.params.find(key);
        if (found != run.params.end() && run_specific_parameter(key, found->second)) run_specific = true;
        const bool same = (found == run.params.end()) == (first == runs.front().params.end()) &&
                          (found == run.params.end() || found->second.text == first->second.text);
        if (!same) varies = true;
      }
      if (varies && !run_specific) board.param_columns.push_back(key);
    }
  }

  // Rows in order of first appearance; runs() returns them oldest first.
  std::map<std::vector<std::optional<std::string>>, size_t> row_of;
  std::vector<std::vector<const RunRecord*>> members;
  for (const auto& run : runs) {
    std::vector<std::optional<std::string>> identity;
    LeaderboardRow row;
    for (const auto& key : board.param_columns) {
      const auto found = run.params.find(key);
      identity.push_back(found == run.params.end() ? std::nullopt : std::optional<std::string>(found->second.text));
      row.params.push_back(found == run.params.end() ? std::nullopt : std::optional<RunParameter>(found->second));
    }
    const auto [it, inserted] = row_of.emplace(identity, board.rows.size());
    if (inserted) {
      board.rows.push_back(std::move(row));
      members.emplace_back();
    }
    board.rows[it->second].run_ids.push_back(run.run_id);
    members[it->second].push_back(&run);
  }
  for (size_t r = 0; r < board.rows.size(); ++r) {
    for (const auto& key : board.metric_columns) {
      std::vector<double> values;
      for (const RunRecord* run : members[r]) {
        if (const auto found = run->metrics.find(key); found != run->metrics.end()) values.push_back(found->second);
      }
      board.rows[r].metrics.push_back(summarize(values));
    }
  }

  std::stable_sort(board.rows.begin(), board.rows.end(), params_before);
  if (board.sort) {
    const size_t column = std::find(board.metric_columns.begin(), board.metric_columns.end(), board.sort->metric) -
                          board.metric_columns.begin();
    const bool descending = board.sort->descending;
    // A row without the metric goes last in either direction; ties keep the parameter order.
    std::stable_sort(board.rows.begin(), board.rows.end(), [&](const LeaderboardRow& a, const LeaderboardRow& b) {
      const MetricSummary& x = a.metrics[column];
      const MetricSummary& y = b.metrics[column];
      if (x.n == 0 || y.n == 0) return x.n != 0 && y.n == 0;
      return descending ? x.mean > y.mean : x.mean < y.mean;
    });
  }
  return board;
}

absl::StatusOr<LeaderboardFormat> parse_leaderboard_format(std::string_view name) {
  if (name == "md") return LeaderboardFormat::kMarkdown;
  if (name == "csv") return LeaderboardFormat::kCsv;
  if (name == "json") return LeaderboardFormat::kJson;
  if (name == "html") return LeaderboardFormat::kHtml;
  return absl::InvalidArgumentError(fmt::format("unknown leaderboard format '{}' (md, csv, json, html)", name));
}

}  // namespace protoquant
