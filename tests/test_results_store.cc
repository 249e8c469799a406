// The SQLite results store: what a run's row holds, the schema, whole-or-nothing inserts,
// concurrent writer processes, filters, open errors, and `protoquant runs`.
#include <spawn.h>
#include <sqlite3.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "protoquant/results_store.h"
#include "results_fixtures.h"
#include "test_support.h"

extern char** environ;

namespace protoquant {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::fixture_manifest;
using testing::fixture_metrics;
using testing::fixture_results;

// Reads the file with SQLite directly, beside the store, so the checks do not trust its queries.
int64_t query_integer(const fs::path& db_path, const std::string& sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
  sqlite3_stmt* statement = nullptr;
  int64_t value = -1;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &statement, nullptr) == SQLITE_OK && sqlite3_step(statement) == SQLITE_ROW) {
    value = sqlite3_column_int64(statement, 0);
  } else {
    ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db);
  }
  sqlite3_finalize(statement);
  sqlite3_close(db);
  return value;
}

void execute(const fs::path& db_path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_path.c_str(), &db), SQLITE_OK);
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);
}

// Rows of `run_id` in each of the four tables together.
int64_t rows_of_run(const fs::path& db_path, const std::string& run_id) {
  int64_t total = 0;
  for (const char* table : {"runs", "params", "metrics", "stages"}) {
    total += query_integer(db_path, fmt::format("SELECT count(*) FROM {} WHERE run_id = '{}'", table, run_id));
  }
  return total;
}

ResultsStore open_store(const fs::path& path) {
  auto store = ResultsStore::open(path);
  if (!store.ok()) throw std::runtime_error(std::string(store.status().message()));
  return std::move(*store);
}

TEST(ResultsStore, RecordsTheRunWithParametersMetricsAndStagesFlattened) {
  testing::TempDir dir;
  ResultsStore store = open_store(dir / "results.db");
  const json results = fixture_results("quickstart-20261201-230000-3f2a9c", fixture_manifest(), fixture_metrics(0.91));
  ASSERT_TRUE(store.add_run(results).ok());

  auto runs = store.runs();
  ASSERT_TRUE(runs.ok()) << runs.status();
  ASSERT_EQ(runs->size(), 1u);
  const RunRecord& run = runs->front();
  EXPECT_EQ(run.run_id, "quickstart-20261201-230000-3f2a9c");
  EXPECT_EQ(run.finished_at, "2026-12-01T23:00:00Z");
  EXPECT_EQ(run.experiment, "quickstart");
  EXPECT_EQ(run.toolkit_version, "0.1.0");
  EXPECT_EQ(run.toolkit_commit, "abc1234def5678");
  EXPECT_EQ(run.manifest_hash, results["manifest_hash"]);
  EXPECT_EQ(run.cpu_model, "Intel(R) Xeon(R) Processor");
  EXPECT_EQ(run.run_dir, "/tmp/protoquant-runs/quickstart-20261201-230000-3f2a9c");
  EXPECT_DOUBLE_EQ(run.total_seconds.value_or(-1), 45.6);

  // Every manifest value under its dotted key; [[metrics]] by index; a list of values whole.
  std::map<std::string, std::string> params;
  for (const auto& [key, value] : run.params) params[key] = value.text;
  EXPECT_EQ(params.at("quantizer.codes"), "256");
  EXPECT_EQ(params.at("quantizer.type"), "vq");
  EXPECT_EQ(params.at("stages.head.epochs"), "5");
  EXPECT_EQ(params.at("stages.head.lr"), "0.01");
  EXPECT_EQ(params.at("experiment.seed"), "0");
  EXPECT_EQ(params.at("metrics.0.type"), "accuracy");
  EXPECT_EQ(params.at("metrics.0.top_k"), "[1,5]");
  EXPECT_EQ(run.params.at("metrics.0.top_k").value, json({1, 5}));
  EXPECT_EQ(run.params.at("head.tau").value, 0.1);
  EXPECT_EQ(params.size(), flatten_parameters(fixture_manifest()).size());

  // Numeric metrics by instance; the text one is only in the kept JSON.
  EXPECT_EQ(run.metrics, (std::map<std::string, double>{{"accuracy.accuracy", 0.91},
                                                        {"accuracy.top5_accuracy", 0.99},
                                                        {"codebook.mean_perplexity", 200.1},
                                                        {"codebook.used_codes", 256}}));
  ASSERT_EQ(run.stages.size(), 2u);
  EXPECT_DOUBLE_EQ(run.stages.at("blackbox").seconds.value_or(-1), 1.5);
  EXPECT_TRUE(run.stages.at("blackbox").reused);
  EXPECT_EQ(run.stages.at("blackbox").key, "aa11-" + run.run_id);
  EXPECT_FALSE(run.stages.at("head").reused);
  EXPECT_DOUBLE_EQ(run.stages.at("head").seconds.value_or(-1), 3.25);

  auto kept = store.results(run.run_id);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(*kept, results);
  EXPECT_EQ(store.results("no-such-run").status().code(), absl::StatusCode::kNotFound);
}

TEST(ResultsStore, FlatteningFollowsTheDocumentedRules) {
  const json manifest = {{"a", {{"b", {{"c", 1}}}, {"empty", json::object()}}},
                         {"list", {1, 2.5, "x"}},
                         {"tables", json::array({{{"type", "t0"}}, {{"type", "t1"}, {"k", {3}}}})},
                         {"flag", true}};
  std::map<std::string, std::string> flat;
  for (const auto& [key, value] : flatten_parameters(manifest)) flat[key] = parameter_text(value);
  EXPECT_EQ(flat, (std::map<std::string, std::string>{{"a.b.c", "1"},
                                                      {"a.empty", "{}"},
                                                      {"list", "[1,2.5,\"x\"]"},
                                                      {"tables.0.type", "t0"},
                                                      {"tables.1.type", "t1"},
                                                      {"tables.1.k", "[3]"},
                                                      {"flag", "true"}}));

  const json metrics = {{"m", {{"x", 1}, {"deep", {{"y", 2.5}}}, {"text", "no"}, {"bool", true}, {"list", {1, 2}}}},
                        {"top", 0.5}};
  std::map<std::string, double> numbers;
  for (const auto& [key, value] : flatten_metrics(metrics)) numbers[key] = value;
  EXPECT_EQ(numbers, (std::map<std::string, double>{{"m.x", 1}, {"m.deep.y", 2.5}, {"top", 0.5}}));
}

TEST(ResultsStore, ParameterTextNormalisesNumbers) {
  EXPECT_EQ(parameter_text(json(64)), "64");
  EXPECT_EQ(parameter_text(json(64.0)), "64");
  EXPECT_EQ(parameter_text(json(-0.0)), "0");
  EXPECT_EQ(parameter_text(json(0.001)), "0.001");
  EXPECT_EQ(parameter_text(json(1e-5)), parameter_text(json::parse("0.00001")));
  EXPECT_EQ(parameter_text(json("vq")), "vq");
  EXPECT_EQ(parameter_text(json(false)), "false");
  EXPECT_EQ(parse_param_filter("quantizer.codes=64.0")->value, "64");
  EXPECT_EQ(parse_param_filter("quantizer.codes=6.4e1")->value, "64");
  EXPECT_EQ(parse_param_filter("stages.head.lr=1e-2")->value, "0.01");
  EXPECT_EQ(parse_param_filter("quantizer.type=vq")->value, "vq");
  EXPECT_EQ(parse_param_filter("quantizer.type=\"vq\"")->value, "vq");
  EXPECT_EQ(parse_param_filter("metrics.0.top_k=[1, 5]")->value, "[1,5]");
  EXPECT_EQ(parse_param_filter("name=a=b")->value, "a=b");
  EXPECT_FALSE(parse_param_filter("no-equals").ok());
  EXPECT_FALSE(parse_param_filter("=5").ok());
}

TEST(ResultsStore, SchemaIsNormalisedVersionedAndInWalMode) {
  testing::TempDir dir;
  const fs::path path = dir / "results.db";
  {
    ResultsStore store = open_store(path);
    ASSERT_TRUE(store.add_run(fixture_results("r1", fixture_manifest(), fixture_metrics(0.9))).ok());
  }
  EXPECT_EQ(query_integer(path, "PRAGMA user_version"), kResultsSchemaVersion);
  EXPECT_EQ(query_integer(path, "PRAGMA application_id"), 0x50515253);
  EXPECT_EQ(query_integer(path, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode = 'wal'"), 1);
  EXPECT_EQ(query_integer(path, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                                "name IN ('runs', 'params', 'metrics', 'stages')"), 4);
  EXPECT_EQ(query_integer(path, "SELECT count(*) FROM runs"), 1);
  EXPECT_EQ(query_integer(path, "SELECT count(*) FROM params WHERE run_id = 'r1'"),
            static_cast<int64_t>(flatten_parameters(fixture_manifest()).size()));
  EXPECT_EQ(query_integer(path, "SELECT count(*) FROM metrics WHERE run_id = 'r1'"), 4);
  EXPECT_EQ(query_integer(path, "SELECT reused FROM stages WHERE run_id = 'r1' AND stage = 'blackbox'"), 1);
  EXPECT_EQ(query_integer(path, "SELECT value FROM params WHERE run_id = 'r1' AND key = 'quantizer.codes'"), 256);
}

TEST(ResultsStore, DuplicateRunIdIsRefusedAndTheFirstKept) {
  testing::TempDir dir;
  ResultsStore store = open_store(dir / "results.db");
  ASSERT_TRUE(store.add_run(fixture_results("same", fixture_manifest(), fixture_metrics(0.8))).ok());
  const int64_t rows = rows_of_run(dir / "results.db", "same");
  const absl::Status again = store.add_run(fixture_results("same", fixture_manifest(), fixture_metrics(0.1)));
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(std::string(again.message()), (dir / "results.db").string() + ": run 'same' is already recorded");
  EXPECT_EQ(rows_of_run(dir / "results.db", "same"), rows);
  EXPECT_EQ(store.runs()->front().metrics.at("accuracy.accuracy"), 0.8);
}

// finished_at has whole seconds: a run and the evaluate that follows it often share one. Runs of
// the same second come back in the order they were recorded (the leaderboard's "latest" is the
// last), whatever their run_ids (random in their last 48 bits).
TEST(ResultsStore, RunsOfTheSameSecondComeBackInTheOrderTheyWereRecorded) {
  testing::TempDir dir;
  ResultsStore store = open_store(dir / "results.db");
  for (const char* id : {"run-ffff", "run-aaaa", "run-cccc"}) {
    json results = fixture_results(id, fixture_manifest(), fixture_metrics(0.5));
    results["finished_at"] = "2026-12-07T02:30:29Z";
    ASSERT_TRUE(store.add_run(results).ok());
  }
  const auto runs = store.runs();
  ASSERT_TRUE(runs.ok()) << runs.status();
  ASSERT_EQ(runs->size(), 3u);
  EXPECT_EQ((*runs)[0].run_id, "run-ffff");
  EXPECT_EQ((*runs)[1].run_id, "run-aaaa");
  EXPECT_EQ((*runs)[2].run_id, "run-cccc");
}

TEST(ResultsStore, AFailureHalfwayThroughAnInsertLeavesNothingOfTheRun) {
  testing::TempDir dir;
  const fs::path path = dir / "results.db";
  ResultsStore store = open_store(path);
  ASSERT_TRUE(store.add_run(fixture_results("good-1", fixture_manifest(), fixture_metrics(0.8))).ok());

  // "quantizer.codes" as a literal key flattens onto quantizer.codes: the runs row and the first
  // parameters are written before the duplicate fails.
  json manifest = fixture_manifest();
  manifest["quantizer.codes"] = 64;
  absl::Status status = store.add_run(fixture_results("bad-params", manifest, fixture_metrics(0.5)));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("parameter 'quantizer.codes' appears twice"), std::string::npos) << status;
  EXPECT_NE(status.message().find(path.string()), std::string::npos) << status;
  EXPECT_EQ(rows_of_run(path, "bad-params"), 0);

  // The same in the metrics, after every parameter went in.
  json metrics = fixture_metrics(0.5);
  metrics["accuracy.top5_accuracy"] = 1.0;
  status = store.add_run(fixture_results("bad-metrics", fixture_manifest(), metrics));
  EXPECT_NE(status.message().find("metric 'accuracy.top5_accuracy' appears twice"), std::string::npos) << status;
  EXPECT_EQ(rows_of_run(path, "bad-metrics"), 0);

  // No transaction was left open: the next run goes in, and the first is untouched.
  ASSERT_TRUE(store.add_run(fixture_results("good-2", fixture_manifest(), fixture_metrics(0.7))).ok());
  auto runs = store.runs();
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 2u);
  EXPECT_EQ((*runs)[0].run_id, "good-1");
  EXPECT_EQ((*runs)[1].run_id, "good-2");
  EXPECT_EQ(query_integer(path, "SELECT count(*) FROM params WHERE run_id NOT IN (SELECT run_id FROM runs)"), 0);
}

TEST(ResultsStore, MalformedResultsAreOneLineErrorsAndWriteNothing) {
  testing::TempDir dir;
  const fs::path path = dir / "results.db";
  ResultsStore store = open_store(path);
  const json good = fixture_results("r", fixture_manifest(), fixture_metrics(0.9));
  std::vector<std::pair<json, std::string>> cases;
  cases.emplace_back(json::array(), "results are not a JSON object");
  json no_id = good;
  no_id.erase("run_id");
  cases.emplace_back(no_id, "results have no 'run_id' string");
  json no_manifest = good;
  no_manifest.erase("manifest");
  cases.emplace_back(no_manifest, "results of run 'r' have no 'manifest'");
  json bad_metrics = good;
  bad_metrics["metrics"] = 3;
  cases.emplace_back(bad_metrics, "'metrics' is not an object");
  json bad_seconds = good;
  bad_seconds["stages"]["head"]["seconds"] = "fast";
  cases.emplace_back(bad_seconds, "'stages.head.seconds' is not a number");
  json bad_time = good;
  bad_time.erase("finished_at");
  cases.emplace_back(bad_time, "'finished_at' is not a time");
  for (const auto& [results, expected] : cases) {
    const absl::Status status = store.add_run(results);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << expected;
    const std::string message(status.message());
    EXPECT_EQ(message.rfind(path.string() + ": ", 0), 0u) << message;
    EXPECT_NE(message.find(expected), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
  EXPECT_EQ(query_integer(path, "SELECT count(*) FROM runs"), 0);
  EXPECT_EQ(query_integer(path, "SELECT count(*) FROM params"), 0);
}

TEST(ResultsStore, ConcurrentWriterProcessesLoseNothing) {
  testing::TempDir dir;
  const fs::path path = dir / "sweep" / "results.db";  // none of them finds the store there yet
  constexpr int kWriters = 4, kRunsEach = 25;
  const fs::path go = dir / "go";  // released together once all are started
  std::vector<pid_t> writers;
  for (int w = 0; w < kWriters; ++w) {
    const std::string index = std::to_string(w), count = std::to_string(kRunsEach), db = path.string(),
                      go_file = go.string();
    std::vector<char*> argv = {const_cast<char*>(PQ_RESULTS_WRITER), const_cast<char*>(db.c_str()),
                               const_cast<char*>(index.c_str()), const_cast<char*>(count.c_str()),
                               const_cast<char*>(go_file.c_str()), nullptr};
    pid_t pid = 0;
    ASSERT_EQ(posix_spawn(&pid, PQ_RESULTS_WRITER, nullptr, nullptr, argv.data(), environ), 0) << PQ_RESULTS_WRITER;
    writers.push_back(pid);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // let them load and wait
  testing::write_text(go, "");
  for (pid_t pid : writers) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "a writer failed (its error is above)";
  }
  ResultsStore store = open_store(path);
  auto runs = store.runs();
  ASSERT_TRUE(runs.ok()) << runs.status();
  std::set<std::string> ids;
  for (const auto& run : *runs) {
    ids.insert(run.run_id);
    EXPECT_EQ(run.params.size(), flatten_parameters(fixture_manifest()).size()) << run.run_id;
    EXPECT_EQ(run.metrics.size(), 4u) << run.run_id;
    EXPECT_EQ(run.stages.size(), 2u) << run.run_id;
  }
  EXPECT_EQ(runs->size(), static_cast<size_t>(kWriters * kRunsEach));
  for (int w = 0; w < kWriters; ++w) {
    for (int i = 0; i < kRunsEach; ++i) EXPECT_EQ(ids.count(fmt::format("writer{}-run{}", w, i)), 1u) << w << " " << i;
  }
  EXPECT_EQ(query_integer(path, "SELECT count(*) FROM metrics"), kWriters * kRunsEach * 4);
  // The writes interleaved (in commit order, the writer changes between neighbours more often
  // than the 3 times of writers taking turns): the test raced them rather than queued them.
  EXPECT_GT(query_integer(path, "SELECT count(*) FROM runs a JOIN runs b ON b.rowid = a.rowid + 1 "
                                "WHERE substr(a.run_id, 1, 7) != substr(b.run_id, 1, 7)"),
            kWriters - 1);
}

TEST(ResultsStore, FiltersCompareTheNormalisedTextOfParameters) {
  testing::TempDir dir;
  ResultsStore store = open_store(dir / "results.db");
  ASSERT_TRUE(store.add_run(fixture_results("int64", fixture_manifest({{"quantizer", {{"codes", 64}}}}), fixture_metrics(0.8))).ok());
  ASSERT_TRUE(store.add_run(fixture_results("float64", fixture_manifest({{"quantizer", {{"codes", 64.0}}}}), fixture_metrics(0.8))).ok());
  ASSERT_TRUE(store.add_run(fixture_results("pq256", fixture_manifest({{"quantizer", {{"type", "pq"}}}}), fixture_metrics(0.8))).ok());

  auto ids = [&](const std::vector<std::string>& where) {
    RunQuery query;
    for (const auto& text : where) query.where.push_back(*parse_param_filter(text));
    auto runs = store.runs(query);
    EXPECT_TRUE(runs.ok()) << runs.status();
    std::vector<std::string> out;
    if (runs.ok()) for (const auto& run : *runs) out.push_back(run.run_id);
    std::sort(out.begin(), out.end());
    return out;
  };
  EXPECT_EQ(ids({"quantizer.codes=64"}), (std::vector<std::string>{"float64", "int64"}));
  EXPECT_EQ(ids({"quantizer.codes=64.0"}), (std::vector<std::string>{"float64", "int64"}));
  EXPECT_EQ(ids({"quantizer.codes=256"}), (std::vector<std::string>{"pq256"}));
  EXPECT_EQ(ids({"quantizer.type=vq", "quantizer.codes=256"}), (std::vector<std::string>{}));
  EXPECT_EQ(ids({"stages.head.lr=1e-2", "quantizer.type=pq"}), (std::vector<std::string>{"pq256"}));
  EXPECT_EQ(ids({"metrics.0.top_k=[1,5]"}).size(), 3u);

  RunQuery typo;
  typo.where.push_back(*parse_param_filter("quantizer.code=64"));
  const auto status = store.runs(typo).status();
  EXPECT_EQ(std::string(status.message()), (dir / "results.db").string() +
                                               ": no recorded run has a parameter 'quantizer.code' (did you mean "
                                               "'quantizer.codes'?)");
}

TEST(ResultsStore, OpenErrorsNameTheFile) {
  testing::TempDir dir;
  testing::write_text(dir / "notes.db", "these are not the results you are looking for\n");
  auto status = ResultsStore::open(dir / "notes.db").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(std::string(status.message()).rfind((dir / "notes.db").string() + ": not a ProtoQuant results store", 0), 0u)
      << status;

  execute(dir / "other.db", "CREATE TABLE things (x INTEGER)");
  status = ResultsStore::open(dir / "other.db").status();
  EXPECT_EQ(std::string(status.message()), (dir / "other.db").string() + ": not a ProtoQuant results store");

  { open_store(dir / "newer.db"); }
  execute(dir / "newer.db", "PRAGMA user_version = 99");
  status = ResultsStore::open(dir / "newer.db").status();
  EXPECT_NE(status.message().find("schema 99 is newer than this build reads (1)"), std::string::npos) << status;

  ResultsStoreOptions reader;
  reader.create_if_missing = false;
  status = ResultsStore::open(dir / "missing.db", reader).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(fs::exists(dir / "missing.db"));
  testing::write_text(dir / "empty.db", "");
  status = ResultsStore::open(dir / "empty.db", reader).status();
  EXPECT_NE(status.message().find("empty.db: not a ProtoQuant results store"), std::string::npos) << status;
}

TEST(ResultsStore, RunsCommandListsOneLinePerRun) {
  testing::TempDir dir;
  const fs::path path = dir / "results.db";
  {
    ResultsStore store = open_store(path);
    ASSERT_TRUE(store.add_run(fixture_results("run-a", fixture_manifest(), fixture_metrics(0.91), "2026-12-01T23:00:00Z")).ok());
    ASSERT_TRUE(store.add_run(fixture_results("run-b", fixture_manifest({{"quantizer", {{"codes", 64}}}}),
                                              fixture_metrics(0.85, 0.97), "2026-12-02T08:30:00Z")).ok());
  }
  const auto listed = testing::run_cli("runs --db " + path.string());
  ASSERT_EQ(listed.exit_code, 0) << listed.output;
  std::istringstream lines(listed.output);
  std::vector<std::string> rows;
  for (std::string line; std::getline(lines, line);) rows.push_back(line);
  ASSERT_EQ(rows.size(), 2u) << listed.output;
  for (const std::string& expected : {"run-a", "2026-12-01T23:00:00Z", "quickstart", "accuracy=0.9100",
                                      "top5_accuracy=0.9900", "/tmp/protoquant-runs/run-a"}) {
    EXPECT_NE(rows[0].find(expected), std::string::npos) << expected << " in " << rows[0];
  }
  EXPECT_NE(rows[1].find("run-b"), std::string::npos);
  EXPECT_NE(rows[1].find("accuracy=0.8500"), std::string::npos);

  const auto filtered = testing::run_cli("runs --db " + path.string() + " --where quantizer.codes=64");
  EXPECT_EQ(filtered.exit_code, 0) << filtered.output;
  EXPECT_EQ(filtered.output.find("run-a"), std::string::npos) << filtered.output;
  EXPECT_NE(filtered.output.find("run-b"), std::string::npos) << filtered.output;

  const auto missing = testing::run_cli("runs --db " + (dir / "nowhere.db").string());
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.output, "error: " + (dir / "nowhere.db").string() + ": no results store there (pass --db FILE)\n");
  testing::write_text(dir / "junk.db", "junk junk junk junk junk junk junk junk junk junk junk junk junk junk\n");
  const auto junk = testing::run_cli("runs --db " + (dir / "junk.db").string());
  EXPECT_EQ(junk.exit_code, 1);
  EXPECT_EQ(junk.output.rfind("error: " + (dir / "junk.db").string() + ": not a ProtoQuant results store", 0), 0u)
      << junk.output;
  EXPECT_EQ(std::count(junk.output.begin(), junk.output.end(), '\n'), 1) << junk.output;
}

}  // namespace
}  // namespace protoquant
