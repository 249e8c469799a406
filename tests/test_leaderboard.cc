// Leaderboards: metric name resolution, which parameters become columns, grouping over seeds
// (mean, sample std, n), sorting, every output format (the HTML one in headless Chromium), and
// `protoquant leaderboard` end to end.
#include <algorithm>
#include <cmath>
#include <iterator>
#include <regex>
#include <sstream>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "protoquant/leaderboard.h"
#include "protoquant/results_store.h"
#include "results_fixtures.h"
#include "test_support.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::fixture_manifest;
using testing::fixture_metrics;
using testing::fixture_results;

// Records `results` in a store at `path` (created) and reads them back as the leaderboard gets them.
std::vector<RunRecord> record(const fs::path& path, const std::vector<json>& results) {
  auto store = ResultsStore::open(path);
  if (!store.ok()) throw std::runtime_error(std::string(store.status().message()));
  for (const auto& run : results) {
    const absl::Status status = store->add_run(run);
    if (!status.ok()) throw std::runtime_error(std::string(status.message()));
  }
  return *store->runs();
}

// A run of configuration `patch` with seed `seed`, named so the id says both.
json seeded_run(const std::string& id, int seed, json patch, double accuracy, double top5 = 0.99) {
  patch["experiment"]["seed"] = seed;
  return fixture_results(id, fixture_manifest(patch), fixture_metrics(accuracy, top5));
}

// Mean and sample standard deviation, written out here rather than taken from the code under test.
std::pair<double, double> mean_and_sample_std(const std::vector<double>& values) {
  double sum = 0;
  for (double v : values) sum += v;
  const double mean = sum / values.size();
  double squares = 0;
  for (double v : values) squares += (v - mean) * (v - mean);
  return {mean, values.size() > 1 ? std::sqrt(squares / (values.size() - 1)) : 0.0};
}

std::vector<std::string> param_texts(const LeaderboardRow& row) {
  std::vector<std::string> out;
  for (const auto& param : row.params) out.push_back(param ? param->text : "<missing>");
  return out;
}

// Three configurations of codes (64 x 3 seeds, 256 x 3 seeds, 1024 x 1 seed), each seed written
// by a different "machine": names, output folders, thread counts and data paths differ per run.
std::vector<json> seed_sweep() {
  std::vector<json> runs;
  const std::vector<std::pair<int, std::vector<double>>> configs = {
      {256, {0.90, 0.91, 0.95}}, {64, {0.80, 0.82, 0.84}}, {1024, {0.97}}};
  for (const auto& [codes, accuracies] : configs) {
    for (size_t seed = 0; seed < accuracies.size(); ++seed) {
      json patch = {{"quantizer", {{"codes", codes}}},
                    {"experiment", {{"name", fmt::format("sweep-{}-s{}", codes, seed)},
                                    {"output", fmt::format("/scratch/machine{}/runs", seed)},
                                    {"threads", 2 + static_cast<int>(seed)},
                                    {"store", fmt::format("/scratch/machine{}/store", seed)}}},
                    {"dataset", {{"root", fmt::format("/data{}/fashion-mnist", seed)}}}};
      runs.push_back(seeded_run(fmt::format("c{}-s{}", codes, seed), static_cast<int>(seed), patch,
                                accuracies[seed], 0.99 - 0.01 * seed));
    }
  }
  return runs;
}

TEST(Leaderboard, ResolvesMetricNamesOrListsTheCandidates) {
  const std::vector<std::string> keys = {"accuracy.accuracy", "accuracy.top5_accuracy", "blackbox.accuracy",
                                         "codebook.used_codes"};
  EXPECT_EQ(*resolve_metric("accuracy.accuracy", keys), "accuracy.accuracy");
  EXPECT_EQ(*resolve_metric("top5_accuracy", keys), "accuracy.top5_accuracy");
  EXPECT_EQ(*resolve_metric("used_codes", keys), "codebook.used_codes");
  EXPECT_EQ(std::string(resolve_metric("accuracy", keys).status().message()),
            "metric 'accuracy' is ambiguous: accuracy.accuracy, blackbox.accuracy (name one in full)");
  EXPECT_EQ(std::string(resolve_metric("perplexity", keys).status().message()),
            "unknown metric 'perplexity' (recorded: accuracy.accuracy, accuracy.top5_accuracy, blackbox.accuracy, "
            "codebook.used_codes)");
  EXPECT_FALSE(resolve_metric("codes", keys).ok()) << "a name matches whole dotted parts only";
  EXPECT_FALSE(resolve_metric("", keys).ok());
  // Without the black box's accuracy, "accuracy" is unique again.
  EXPECT_EQ(*resolve_metric("accuracy", {"accuracy.accuracy", "codebook.used_codes"}), "accuracy.accuracy");

  const MetricSort descending = parse_metric_sort("-accuracy");
  EXPECT_EQ(descending.metric, "accuracy");
  EXPECT_TRUE(descending.descending);
  EXPECT_FALSE(parse_metric_sort("accuracy").descending);
}

TEST(Leaderboard, GroupsSeedsIntoMeanSampleStdAndN) {
  testing::TempDir dir;
  const auto runs = record(dir / "results.db", seed_sweep());
  auto board = build_leaderboard(runs, {});
  ASSERT_TRUE(board.ok()) << board.status();
  // Seeds, names, output folders, threads, cache and data paths differ per run: none is a column.
  EXPECT_EQ(board->param_columns, std::vector<std::string>{"quantizer.codes"});
  EXPECT_EQ(board->metric_columns, (std::vector<std::string>{"accuracy.accuracy", "accuracy.top5_accuracy"}));
  EXPECT_EQ(board->run_count, 7u);
  ASSERT_EQ(board->rows.size(), 3u);
  // Ordered by the parameter's value as a number: 64 < 256 < 1024.
  EXPECT_EQ(param_texts(board->rows[0]), std::vector<std::string>{"64"});
  EXPECT_EQ(param_texts(board->rows[1]), std::vector<std::string>{"256"});
  EXPECT_EQ(param_texts(board->rows[2]), std::vector<std::string>{"1024"});
  EXPECT_EQ(board->rows[0].run_ids, (std::vector<std::string>{"c64-s0", "c64-s1", "c64-s2"}));

  const std::vector<std::vector<double>> accuracy = {{0.80, 0.82, 0.84}, {0.90, 0.91, 0.95}, {0.97}};
  const std::vector<std::vector<double>> top5 = {{0.99, 0.98, 0.97}, {0.99, 0.98, 0.97}, {0.99}};
  for (size_t r = 0; r < 3; ++r) {
    for (const auto& [column, values] : {std::make_pair(0, accuracy[r]), std::make_pair(1, top5[r])}) {
      const auto [mean, std] = mean_and_sample_std(values);
      const MetricSummary& cell = board->rows[r].metrics[column];
      EXPECT_EQ(cell.n, static_cast<int64_t>(values.size())) << r << " " << column;
      EXPECT_NEAR(cell.mean, mean, 1e-12) << r << " " << column;
      EXPECT_NEAR(cell.std, std, 1e-12) << r << " " << column;
    }
  }
  // By hand: {0.80, 0.82, 0.84} has mean 0.82 and sample std 0.02; {0.90, 0.91, 0.95}: 0.92 and
  // sqrt(0.0014 / 2).
  EXPECT_NEAR(board->rows[0].metrics[0].std, 0.02, 1e-12);
  EXPECT_NEAR(board->rows[1].metrics[0].mean, 0.92, 1e-12);
  EXPECT_NEAR(board->rows[1].metrics[0].std, std::sqrt(0.0007), 1e-12);
  EXPECT_EQ(board->rows[2].metrics[0].std, 0.0);
}

TEST(Leaderboard, ARerunWithTheSameStageKeysCountsOnce) {
  testing::TempDir dir;
  std::vector<json> runs = seed_sweep();
  // c64-s1 recorded again (a rerun that reused every stage): same stage keys, a new run id.
  json rerun = runs[4];
  ASSERT_EQ(rerun["run_id"], "c64-s1");
  rerun["run_id"] = "c64-s1-again";
  runs.push_back(rerun);
  const auto recorded = record(dir / "results.db", runs);
  ASSERT_EQ(recorded.size(), 8u);
  auto board = build_leaderboard(recorded, {});
  ASSERT_TRUE(board.ok()) << board.status();
  EXPECT_EQ(board->run_count, 7u);
  EXPECT_EQ(board->rows[0].run_ids, (std::vector<std::string>{"c64-s0", "c64-s1-again", "c64-s2"}));
  EXPECT_EQ(board->rows[0].metrics[0].n, 3);
  EXPECT_NEAR(board->rows[0].metrics[0].std, 0.02, 1e-12);  // not shrunk by the duplicate
}

TEST(Leaderboard, TheSameConfigurationAndSeedUnderOtherStageKeysCountsOnceAsItsLatest) {
  testing::TempDir dir;
  std::vector<json> runs = seed_sweep();
  // c64-s1 again from a rebuilt toolkit: every stage key differs, the configuration and seed do not.
  json rebuilt = runs[4];
  ASSERT_EQ(rebuilt["run_id"], "c64-s1");
  rebuilt["run_id"] = "c64-s1-rebuilt";
  for (auto& [stage, key] : rebuilt["artifacts"].items()) key = "0" + key.get<std::string>().substr(1);
  for (auto& [stage, record] : rebuilt["stages"].items()) {
    if (record.contains("key")) record["key"] = "0" + record["key"].get<std::string>().substr(1);
  }
  rebuilt["metrics"]["accuracy"]["accuracy"] = 0.5;
  runs.push_back(rebuilt);
  const auto recorded = record(dir / "results.db", runs);
  ASSERT_EQ(recorded.size(), 8u);
  auto board = build_leaderboard(recorded, {});
  ASSERT_TRUE(board.ok()) << board.status();
  EXPECT_EQ(board->run_count, 7u);
  EXPECT_EQ(board->rows[0].run_ids, (std::vector<std::string>{"c64-s0", "c64-s1-rebuilt", "c64-s2"}));
  EXPECT_EQ(board->rows[0].metrics[0].n, 3);
  const auto [mean, std] = mean_and_sample_std({0.80, 0.5, 0.84});
  EXPECT_NEAR(board->rows[0].metrics[0].mean, mean, 1e-12);
}

TEST(Leaderboard, VaryingParametersBecomeColumnsAndConstantOnesDoNot) {
  testing::TempDir dir;
  const auto runs = record(dir / "results.db", {
      seeded_run("vq", 0, json::object(), 0.9),
      seeded_run("pq", 0, {{"quantizer", {{"type", "pq"}, {"subspaces", 4}}}}, 0.8),
      // The same configuration as "vq", from another machine with another seed.
      seeded_run("vq-elsewhere", 3, {{"dataset", {{"root", "/mnt/other/fashion-mnist"}}},
                                     {"experiment", {{"output", "/mnt/other/runs"}}}}, 0.92),
  });
  auto board = build_leaderboard(runs, {});
  ASSERT_TRUE(board.ok()) << board.status();
  EXPECT_EQ(board->param_columns, (std::vector<std::string>{"quantizer.subspaces", "quantizer.type"}));
  ASSERT_EQ(board->rows.size(), 2u);
  // A missing parameter sorts after present ones.
  EXPECT_EQ(param_texts(board->rows[0]), (std::vector<std::string>{"4", "pq"}));
  EXPECT_EQ(param_texts(board->rows[1]), (std::vector<std::string>{"<missing>", "vq"}));
  EXPECT_EQ(board->rows[1].run_ids, (std::vector<std::string>{"vq", "vq-elsewhere"}));
  EXPECT_EQ(board->rows[1].metrics[0].n, 2);

  // All runs the same configuration: no parameter columns, one row.
  std::vector<RunRecord> vq_only;
  std::copy_if(runs.begin(), runs.end(), std::back_inserter(vq_only), [](const RunRecord& run) { return run.run_id != "pq"; });
  ASSERT_EQ(vq_only.size(), 2u);
  auto same = build_leaderboard(vq_only, {});
  ASSERT_TRUE(same.ok());
  EXPECT_TRUE(same->param_columns.empty());
  EXPECT_EQ(same->rows.size(), 1u);

  EXPECT_TRUE(run_specific_parameter("experiment.seed", {"1", 1}));
  EXPECT_TRUE(run_specific_parameter("experiment.output", {"runs", "runs"}));
  EXPECT_TRUE(run_specific_parameter("dataset.root", {"/data/x", "/data/x"}));
  EXPECT_FALSE(run_specific_parameter("quantizer.codes", {"64", 64}));
  EXPECT_FALSE(run_specific_parameter("experiment.feature_dtype", {"bf16", "bf16"}));
}

TEST(Leaderboard, GroupByNamedParametersAveragesOverTheRest) {
  testing::TempDir dir;
  std::vector<json> results;
  const std::vector<std::tuple<std::string, int, double>> grid = {
      {"vq", 64, 0.80}, {"vq", 256, 0.90}, {"pq", 64, 0.70}, {"pq", 256, 0.76}};
  for (const auto& [type, codes, accuracy] : grid) {
    results.push_back(seeded_run(fmt::format("{}-{}", type, codes), 0, {{"quantizer", {{"type", type}, {"codes", codes}}}},
                                 accuracy));
  }
  const auto runs = record(dir / "results.db", results);
  LeaderboardOptions options;
  options.group_by = {"quantizer.type"};
  options.metrics = {"accuracy"};
  auto board = build_leaderboard(runs, options);
  ASSERT_TRUE(board.ok()) << board.status();
  EXPECT_EQ(board->param_columns, std::vector<std::string>{"quantizer.type"});
  EXPECT_EQ(board->metric_columns, std::vector<std::string>{"accuracy.accuracy"});
  ASSERT_EQ(board->rows.size(), 2u);
  EXPECT_EQ(param_texts(board->rows[0]), std::vector<std::string>{"pq"});
  const auto [pq_mean, pq_std] = mean_and_sample_std({0.70, 0.76});
  EXPECT_NEAR(board->rows[0].metrics[0].mean, pq_mean, 1e-12);
  EXPECT_NEAR(board->rows[0].metrics[0].std, pq_std, 1e-12);
  EXPECT_EQ(board->rows[0].metrics[0].n, 2);
  EXPECT_NEAR(board->rows[1].metrics[0].mean, 0.85, 1e-12);

  // A run-specific key groups when asked for by name.
  options.group_by = {"experiment.seed"};
  board = build_leaderboard(runs, options);
  ASSERT_TRUE(board.ok());
  EXPECT_EQ(board->rows.size(), 1u);
  EXPECT_EQ(board->rows[0].metrics[0].n, 4);

  options.group_by = {"quantizer.tpye"};
  EXPECT_EQ(std::string(build_leaderboard(runs, options).status().message()),
            "--group-by: no selected run has a parameter 'quantizer.tpye' (did you mean 'quantizer.type'?)");
}

TEST(Leaderboard, SortsByAMetricEitherWayWithMissingValuesLast) {
  testing::TempDir dir;
  json no_codebook = seeded_run("c512", 0, {{"quantizer", {{"codes", 512}}}}, 0.5);
  no_codebook["metrics"].erase("codebook");
  auto runs = record(dir / "results.db", seed_sweep());
  const auto extra = record(dir / "extra.db", {no_codebook});
  runs.push_back(extra.front());

  auto order = [&](const std::string& sort, std::vector<std::string> metrics = {}) {
    LeaderboardOptions options;
    options.sort = parse_metric_sort(sort);
    options.metrics = std::move(metrics);
    auto board = build_leaderboard(runs, options);
    EXPECT_TRUE(board.ok()) << board.status();
    std::vector<std::string> codes;
    if (board.ok()) for (const auto& row : board->rows) codes.push_back(param_texts(row)[0]);
    return codes;
  };
  EXPECT_EQ(order("-accuracy.accuracy"), (std::vector<std::string>{"1024", "256", "64", "512"}));
  EXPECT_EQ(order("accuracy.accuracy"), (std::vector<std::string>{"512", "64", "256", "1024"}));
  // used_codes is the same (256) wherever recorded; c512 has none: last both ways, ties by codes.
  EXPECT_EQ(order("-used_codes"), (std::vector<std::string>{"64", "256", "1024", "512"}));
  EXPECT_EQ(order("used_codes"), (std::vector<std::string>{"64", "256", "1024", "512"}));

  LeaderboardOptions options;
  options.metrics = {"top5_accuracy"};
  options.sort = parse_metric_sort("-mean_perplexity");
  auto board = build_leaderboard(runs, options);
  ASSERT_TRUE(board.ok());
  // The sort key is shown, after the chosen metrics.
  EXPECT_EQ(board->metric_columns, (std::vector<std::string>{"accuracy.top5_accuracy", "codebook.mean_perplexity"}));
  EXPECT_EQ(board->rows.back().metrics[1].n, 0);

  options.sort = parse_metric_sort("-nope");
  EXPECT_NE(build_leaderboard(runs, options).status().message().find("unknown metric 'nope' (recorded: "),
            std::string::npos);
}

TEST(Leaderboard, DefaultMetricsAreTheAccuracyInstance) {
  testing::TempDir dir;
  const auto runs = record(dir / "results.db", {seeded_run("a", 0, json::object(), 0.9)});
  EXPECT_EQ(build_leaderboard(runs, {})->metric_columns,
            (std::vector<std::string>{"accuracy.accuracy", "accuracy.top5_accuracy"}));
  json other = seeded_run("b", 0, json::object(), 0.9);
  other["metrics"].erase("accuracy");
  const auto no_accuracy = record(dir / "other.db", {other});
  EXPECT_EQ(build_leaderboard(no_accuracy, {})->metric_columns,
            (std::vector<std::string>{"codebook.mean_perplexity", "codebook.used_codes"}));
  EXPECT_EQ(build_leaderboard({}, {}).status().code(), absl::StatusCode::kNotFound);
}

// The seed sweep's leaderboard, two metrics.
Leaderboard sweep_board(const fs::path& db, const std::string& sort = "") {
  LeaderboardOptions options;
  if (!sort.empty()) options.sort = parse_metric_sort(sort);
  auto board = build_leaderboard(record(db, seed_sweep()), options);
  if (!board.ok()) throw std::runtime_error(std::string(board.status().message()));
  return *board;
}

TEST(Leaderboard, RendersAGithubMarkdownTable) {
  testing::TempDir dir;
  const std::string text = render_leaderboard(sweep_board(dir / "results.db"), LeaderboardFormat::kMarkdown, "");
  EXPECT_EQ(text,
            "| quantizer.codes | accuracy.accuracy | accuracy.top5_accuracy |\n"
            "| --- | ---: | ---: |\n"
            "| 64 | 0.8200 ± 0.0200 (n=3) | 0.9800 ± 0.0100 (n=3) |\n"
            "| 256 | 0.9200 ± 0.0265 (n=3) | 0.9800 ± 0.0100 (n=3) |\n"
            "| 1024 | 0.9700 | 0.9900 |\n");
}

TEST(Leaderboard, MarkdownCellsShowNamesLiterally) {
  testing::TempDir dir;
  const auto runs = record(dir / "results.db", {
      seeded_run("hostile", 0, {{"head", {{"note", "<script>alert(1)</script> a|b *x* [l](u) `c` \\ & d"}}}}, 0.5),
      seeded_run("plain", 0, {{"head", {{"note", "plain"}}}}, 0.25),
  });
  LeaderboardOptions options;
  options.metrics = {"accuracy.accuracy"};
  const std::string text = render_leaderboard(*build_leaderboard(runs, options), LeaderboardFormat::kMarkdown, "");
  EXPECT_NE(text.find("\n| &lt;script&gt;alert(1)&lt;/script&gt; a\\|b \\*x\\* \\[l\\](u) \\`c\\` \\\\ &amp; d | 0.5000 |\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("<script>"), std::string::npos) << text;
  EXPECT_NE(text.find("\n| plain | 0.2500 |\n"), std::string::npos) << text;
}

TEST(Leaderboard, RendersRfc4180CsvWithMeanStdAndNColumns) {
  testing::TempDir dir;
  const auto runs = record(dir / "results.db", {
      seeded_run("plain", 0, {{"head", {{"note", "plain"}}}}, 0.5),
      seeded_run("quoted", 0, {{"head", {{"note", "say \"hi\", world"}}}}, 0.25),
      seeded_run("quoted-2", 1, {{"head", {{"note", "say \"hi\", world"}}}}, 0.75),
  });
  LeaderboardOptions options;
  options.metrics = {"accuracy.accuracy"};
  const std::string text = render_leaderboard(*build_leaderboard(runs, options), LeaderboardFormat::kCsv, "");
  EXPECT_EQ(text,
            "head.note,accuracy.accuracy.mean,accuracy.accuracy.std,accuracy.accuracy.n\r\n"
            "plain,0.5,,1\r\n"
            "\"say \"\"hi\"\", world\",0.5," + fmt::format("{}", std::sqrt(0.125)) + ",2\r\n");
}

TEST(Leaderboard, RendersJsonObjectsWithMeanStdAndN) {
  testing::TempDir dir;
  const json rows = json::parse(render_leaderboard(sweep_board(dir / "results.db"), LeaderboardFormat::kJson, ""));
  ASSERT_TRUE(rows.is_array());
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0]["params"], json({{"quantizer.codes", 64}}));
  EXPECT_EQ(rows[0]["runs"], json({"c64-s0", "c64-s1", "c64-s2"}));
  const auto [mean, std] = mean_and_sample_std({0.80, 0.82, 0.84});
  EXPECT_NEAR(rows[0]["metrics"]["accuracy.accuracy"]["mean"].get<double>(), mean, 1e-12);
  EXPECT_NEAR(rows[0]["metrics"]["accuracy.accuracy"]["std"].get<double>(), std, 1e-12);
  EXPECT_EQ(rows[0]["metrics"]["accuracy.accuracy"]["n"], 3);
  EXPECT_EQ(rows[2]["metrics"]["accuracy.accuracy"], json({{"mean", 0.97}, {"std", nullptr}, {"n", 1}}));
}

std::vector<std::string> row_order(const std::string& dom) {
  std::vector<std::string> runs;
  const std::regex row("<tr data-runs=\"([^\"]*)\"");
  for (auto it = std::sregex_iterator(dom.begin(), dom.end(), row); it != std::sregex_iterator(); ++it) {
    runs.push_back((*it)[1].str().substr(0, (*it)[1].str().find(' ')));
  }
  return runs;
}

TEST(Leaderboard, HtmlPageRendersAndSortsInHeadlessChromium) {
  ASSERT_FALSE(testing::chromium().empty())
      << "chromium is not installed: tools/install-deps.sh installs it (the leaderboard's HTML is checked in a browser)";
  testing::TempDir dir;
  const std::string html =
      render_leaderboard(sweep_board(dir / "results.db"), LeaderboardFormat::kHtml, "ProtoQuant leaderboard: test");
  EXPECT_EQ(html.find("http"), std::string::npos) << "the page must not reach the network";
  EXPECT_EQ(html.find("<link"), std::string::npos);
  const fs::path page = dir / "board.html";
  testing::write_text(page, html);
  const std::string url = "file://" + page.string();

  // The picture: the window's size, not blank, with text on it.
  const fs::path shot = dir / "shot.png";
  ASSERT_EQ(testing::run_chromium(dir, fmt::format("--screenshot={} --window-size=1200,800 '{}'", shot.string(), url),
                         dir / "stdout.txt"), 0)
      << testing::read_text(dir / "chromium.log");
  const cv::Mat image = cv::imread(shot.string(), cv::IMREAD_GRAYSCALE);
  ASSERT_FALSE(image.empty()) << "no screenshot: " << testing::read_text(dir / "chromium.log");
  EXPECT_EQ(image.cols, 1200);
  EXPECT_EQ(image.rows, 800);
  cv::Scalar mean, deviation;
  cv::meanStdDev(image, mean, deviation);
  EXPECT_GT(deviation[0], 5.0) << "a uniform picture";
  const int dark = cv::countNonZero(image < 100);
  EXPECT_GT(dark, 1500) << "too little text drawn";
  EXPECT_LT(dark, static_cast<int>(image.total() / 4)) << "mostly dark: not the page";

  // The order after the page's own script sorted it from the address.
  auto sorted_by = [&](const std::string& hash) {
    const fs::path dom = dir / "dom.html";
    EXPECT_EQ(testing::run_chromium(dir, fmt::format("--dump-dom '{}#sort={}'", url, hash), dom), 0)
        << testing::read_text(dir / "chromium.log");
    return testing::read_text(dom);
  };
  const std::string descending = sorted_by("-accuracy");
  EXPECT_EQ(row_order(descending), (std::vector<std::string>{"c1024-s0", "c256-s0", "c64-s0"}));
  EXPECT_NE(descending.find("data-key=\"accuracy.accuracy\" aria-sort=\"descending\""), std::string::npos);
  EXPECT_EQ(row_order(sorted_by("accuracy.accuracy")), (std::vector<std::string>{"c64-s0", "c256-s0", "c1024-s0"}));
  // Parameters sort as numbers, not text ("1024" < "256" as text).
  EXPECT_EQ(row_order(sorted_by("-quantizer.codes")), (std::vector<std::string>{"c1024-s0", "c256-s0", "c64-s0"}));
  EXPECT_EQ(row_order(sorted_by("codes")), (std::vector<std::string>{"c64-s0", "c256-s0", "c1024-s0"}));
  // An unknown name leaves the page's own order.
  EXPECT_EQ(row_order(sorted_by("-nope")), (std::vector<std::string>{"c64-s0", "c256-s0", "c1024-s0"}));
}

TEST(Leaderboard, CommandFiltersSortsWritesAndReportsErrors) {
  testing::TempDir dir;
  const fs::path db = dir / "results.db";
  record(db, seed_sweep());
  const std::string base = "leaderboard --db " + db.string();

  const auto md = testing::run_cli(base + " --sort -accuracy");
  ASSERT_EQ(md.exit_code, 0) << md.output;
  EXPECT_EQ(md.output,
            "| quantizer.codes | accuracy.accuracy | accuracy.top5_accuracy |\n"
            "| --- | ---: | ---: |\n"
            "| 1024 | 0.9700 | 0.9900 |\n"
            "| 256 | 0.9200 ± 0.0265 (n=3) | 0.9800 ± 0.0100 (n=3) |\n"
            "| 64 | 0.8200 ± 0.0200 (n=3) | 0.9800 ± 0.0100 (n=3) |\n");

  const auto csv = testing::run_cli(base + " --where quantizer.codes=256 --where experiment.seed=1 --metrics "
                                           "accuracy,used_codes --format csv");
  ASSERT_EQ(csv.exit_code, 0) << csv.output;
  EXPECT_EQ(csv.output,
            "accuracy.accuracy.mean,accuracy.accuracy.std,accuracy.accuracy.n,codebook.used_codes.mean,"
            "codebook.used_codes.std,codebook.used_codes.n\r\n0.91,,1,256,,1\r\n");

  const auto grouped = testing::run_cli(base + " --group-by experiment.seed --metrics accuracy --format json");
  ASSERT_EQ(grouped.exit_code, 0) << grouped.output;
  EXPECT_EQ(json::parse(grouped.output).size(), 3u);  // seeds 0, 1, 2

  const fs::path out = dir / "boards" / "board.html";
  const auto written = testing::run_cli(base + " --format html --out " + out.string());
  ASSERT_EQ(written.exit_code, 0) << written.output;
  EXPECT_EQ(written.output, "");
  EXPECT_NE(testing::read_text(out).find("<table id=\"leaderboard\">"), std::string::npos);
  for (const auto& entry : fs::directory_iterator(out.parent_path())) {
    EXPECT_EQ(entry.path().filename(), "board.html") << "a temporary file was left behind";
  }

  const auto unknown = testing::run_cli(base + " --metrics nope");
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_EQ(unknown.output, "error: " + db.string() +
                                ": unknown metric 'nope' (recorded: accuracy.accuracy, accuracy.top5_accuracy, "
                                "codebook.mean_perplexity, codebook.used_codes)\n");
  const auto nothing = testing::run_cli(base + " --where quantizer.codes=3");
  EXPECT_EQ(nothing.exit_code, 1);
  EXPECT_EQ(nothing.output, "error: " + db.string() + ": no recorded run matches\n");
  const auto typo = testing::run_cli(base + " --where quantizer.codez=3");
  EXPECT_EQ(typo.exit_code, 1);
  EXPECT_NE(typo.output.find("did you mean 'quantizer.codes'?"), std::string::npos) << typo.output;
  const auto format = testing::run_cli(base + " --format xml");
  EXPECT_NE(format.exit_code, 0);
  const auto missing = testing::run_cli("leaderboard --db " + (dir / "none.db").string());
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.output, "error: " + (dir / "none.db").string() + ": no results store there (pass --db FILE)\n");
}

}  // namespace
}  // namespace protoquant
