// The results store: an SQLite file that records every finished run (one row per results.json),
// with its parameters, metrics and stage timings flattened to dotted keys, so that ablations can
// be filtered and compared (protoquant runs, protoquant leaderboard) without reading run folders.
//
// Several processes may write one store at once (a sweep's runs finishing together): the file is
// in WAL mode, every write is one transaction begun IMMEDIATE (it takes the write lock up front,
// so it waits on the busy timeout instead of failing halfway), and a run is recorded whole or not
// at all.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <absl/status/status.h>
#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>

namespace protoquant {

// The store's file name inside an experiment's output folder (`experiment.output`, default
// "runs"): runs/results.db collects every run written under runs/.
inline constexpr char kResultsStoreFile[] = "results.db";

// PRAGMA user_version of the schema this build writes and reads. A store with a higher version
// was written by a newer build and is refused, not guessed at.
inline constexpr int kResultsSchemaVersion = 1;

// One parameter of a run. `text` is what filters compare and tables show: strings unquoted,
// numbers normalised (64, 64.0 and 6.4e1 are all "64"), anything else compact JSON. `value` is the
// JSON value as the manifest had it.
struct RunParameter {
  std::string text;
  nlohmann::json value;
};

struct StageRecord {
  std::optional<double> seconds;
  bool reused = false;  // loaded from an earlier run (resume, a shared stage) rather than trained
  std::string key;      // the stage's content hash, empty when the run did not record one
};

// A recorded run, as runs() returns it (the whole results JSON: results()).
struct RunRecord {
  std::string run_id;
  std::string finished_at;  // ISO 8601 UTC, as results.json has it
  std::string experiment;
  std::string toolkit_version;
  std::string toolkit_commit;  // "unknown" outside a git checkout
  std::string manifest_hash;
  std::string cpu_model;
  std::string run_dir;
  std::optional<double> total_seconds;
  std::map<std::string, RunParameter> params;  // dotted keys: "quantizer.codes", "metrics.0.type"
  std::map<std::string, double> metrics;       // dotted keys by instance: "accuracy.accuracy"
  std::map<std::string, StageRecord> stages;
};

// `--where KEY=VALUE`: the run's parameter KEY has the text VALUE (normalised as RunParameter).
struct ParamFilter {
  std::string key;
  std::string value;
};
// Parses "KEY=VALUE" (the first '=' splits), normalising VALUE.
absl::StatusOr<ParamFilter> parse_param_filter(std::string_view text);

struct RunQuery {
  std::vector<ParamFilter> where;  // every filter must hold
};

// The flattening the store applies, exposed for the leaderboard and the tests.
//
// Parameters: nested tables become dotted keys; an array holding tables ([[metrics]]) is
// flattened by index ("metrics.0.type"), an array of plain values stays one parameter (its
// compact JSON, "[1,5]"), since a list such as top_k is one setting.
std::vector<std::pair<std::string, nlohmann::json>> flatten_parameters(const nlohmann::json& manifest);
// Metrics: nested objects become dotted keys; only finite numbers are kept (booleans, strings and
// arrays such as per-class lists stay in the stored results JSON only).
std::vector<std::pair<std::string, double>> flatten_metrics(const nlohmann::json& metrics);
// RunParameter::text of a JSON value.
std::string parameter_text(const nlohmann::json& value);

class ResultsConnection;  // the open SQLite handle; defined in results_store.cc

struct ResultsStoreOptions {
  bool create_if_missing = true;  // false for readers: a mistyped --db is an error, not a new file
  int busy_timeout_ms = 30000;    // how long a write waits for another process's transaction
};

class ResultsStore {
 public:
  // Opens (or creates) the store. Errors name the file: "results.db: not a ProtoQuant results
  // store", a schema newer than this build, a missing file when !create_if_missing.
  static absl::StatusOr<ResultsStore> open(const std::filesystem::path& path, ResultsStoreOptions options = {});
  // Whether a run could record into `path`, without creating anything: not a folder, and the
  // file (or, when it does not exist yet, the nearest existing folder above it) writable.
  static absl::Status check_writable(const std::filesystem::path& path);

  ResultsStore(ResultsStore&&) noexcept;
  ResultsStore& operator=(ResultsStore&&) noexcept;
  ~ResultsStore();

  const std::filesystem::path& path() const;

  // Records one finished run from its results.json object, in one transaction: a bad field, a
  // run_id already recorded (AlreadyExists) or any failure halfway leaves nothing of the run.
  absl::Status add_run(const nlohmann::json& results);

  // The recorded runs matching `query`, oldest first. A filter on a key no recorded run has is
  // an error (a typo would otherwise silently select nothing).
  absl::StatusOr<std::vector<RunRecord>> runs(const RunQuery& query = {}) const;

  // The whole results JSON a run was recorded from.
  absl::StatusOr<nlohmann::json> results(const std::string& run_id) const;

 private:
  explicit ResultsStore(std::unique_ptr<ResultsConnection> connection);
  std::unique_ptr<ResultsConnection> connection_;
};

}  // namespace protoquant
