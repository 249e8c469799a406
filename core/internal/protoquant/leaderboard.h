// Leaderboards: recorded runs grouped into configurations, one row each, with every selected
// metric as mean ± sample std over the group's runs (seeds), rendered as Markdown, CSV, JSON or a
// self-contained sortable HTML page.
//
// Which parameters make a configuration: every recorded parameter except those that say where or
// how a run was executed rather than what it computed (run_specific_parameter()). The ones that
// differ among the selected runs become the table's columns; equal ones are left out.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <absl/status/statusor.h>

#include "protoquant/results_store.h"

namespace protoquant {

struct MetricSort {
  std::string metric;  // a name as resolve_metric() takes it
  bool descending = false;
};
// "-accuracy" sorts descending, "accuracy" ascending.
MetricSort parse_metric_sort(std::string_view text);

struct LeaderboardOptions {
  // Metric names (resolve_metric()); empty: every value of the `accuracy` instance ("accuracy"
  // itself or "accuracy.*"), or every metric when no selected run has one.
  std::vector<std::string> metrics;
  std::optional<MetricSort> sort;  // none: rows in the order of their parameter values
  // Parameters to group by (and show); empty: every configuration parameter that varies.
  std::vector<std::string> group_by;
};

// The full dotted key `name` stands for among `keys`: the key equal to it, else the only one
// ending in ".name" (so "accuracy" finds "accuracy.accuracy"). Unknown and ambiguous names are
// one-line errors listing the candidates.
absl::StatusOr<std::string> resolve_metric(const std::string& name, const std::vector<std::string>& keys);

// True for parameters that identify a run rather than its configuration: experiment.seed (what
// a group averages over), experiment.name and experiment.output (labels and places),
// experiment.threads, experiment.store and experiment.store_features (how fast and where, not what), plugins (where code was
// loaded from), and any absolute path (where data sat on that machine). `--group-by` still groups
// by them when named.
bool run_specific_parameter(const std::string& key, const RunParameter& value);

struct MetricSummary {
  int64_t n = 0;     // runs of the group that recorded the metric
  double mean = 0;
  double std = 0;    // sample standard deviation (n - 1); 0 when n < 2
};

struct LeaderboardRow {
  std::vector<std::optional<RunParameter>> params;  // one per param column; empty: the runs lack it
  std::vector<MetricSummary> metrics;               // one per metric column
  std::vector<std::string> run_ids;
};

struct Leaderboard {
  std::vector<std::string> param_columns;
  std::vector<std::string> metric_columns;  // full dotted keys
  std::vector<LeaderboardRow> rows;
  std::optional<MetricSort> sort;           // resolved to a metric column
  size_t run_count = 0;
};

// Groups `runs` (already filtered) into a leaderboard. Runs with the same stage keys are one
// experiment recorded twice (a rerun that reused every stage): only the latest counts.
// Errors: no runs, unknown or ambiguous metric names, a --group-by key no run has.
absl::StatusOr<Leaderboard> build_leaderboard(const std::vector<RunRecord>& runs, const LeaderboardOptions& options);

enum class LeaderboardFormat { kMarkdown, kCsv, kJson, kHtml };
absl::StatusOr<LeaderboardFormat> parse_leaderboard_format(std::string_view name);  // md, csv, json, html

// md: a GitHub table, cells "mean ± std (n=3)" (n = 1: the value alone). csv: RFC 4180, one
// NAME.mean, NAME.std, NAME.n column triple per metric. json: an array of {"params", "metrics":
// {NAME: {"mean", "std", "n"}}, "runs"}. html: one page, no network, sortable by clicking a header
// or by the address's #sort=-NAME. `title` heads the html page.
std::string render_leaderboard(const Leaderboard& board, LeaderboardFormat format, std::string_view title);

}  // namespace protoquant
