// The SQLite results store, through SQLite's C API: its result codes map one to one onto
// absl::Status (SQLITE_BUSY, SQLITE_CONSTRAINT_PRIMARYKEY for a run recorded twice), where a C++
// wrapper would throw and every call would need a guard; the RAII it would add is the two small
// classes below.
#include "protoquant/results_store.h"

#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cmath>
#include <system_error>

#include <fmt/format.h>

#include "protoquant/params.h"
#include "protoquant/status.h"
#include "results/results_fields.h"

namespace protoquant {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// "PQRS" in the database header's application_id: tells a store from any other SQLite file.
constexpr int32_t kApplicationId = 0x50515253;

// Normalised: one row per run, its parameters, metrics and stages in their own tables keyed by
// run, so a filter or a leaderboard column is an index lookup rather than a JSON scan. The whole
// results JSON is kept as well: fields this schema does not know yet stay available.
constexpr const char* kSchema = R"sql(
CREATE TABLE runs (
  run_id          TEXT PRIMARY KEY NOT NULL,
  finished_at     TEXT NOT NULL,
  experiment      TEXT NOT NULL,
  toolkit_version TEXT NOT NULL,
  toolkit_commit  TEXT NOT NULL,
  manifest_hash   TEXT NOT NULL,
  cpu_model       TEXT NOT NULL,
  run_dir         TEXT NOT NULL,
  total_seconds   REAL,
  results         TEXT NOT NULL
);
CREATE INDEX runs_by_time ON runs (finished_at, run_id);
CREATE TABLE params (
  run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
  key    TEXT NOT NULL,
  value  TEXT NOT NULL,
  json   TEXT NOT NULL,
  PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE INDEX params_by_value ON params (key, value);
CREATE TABLE metrics (
  run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
  key    TEXT NOT NULL,
  value  REAL NOT NULL,
  PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE TABLE stages (
  run_id  TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
  stage   TEXT NOT NULL,
  seconds REAL,
  reused  INTEGER NOT NULL,
  key     TEXT NOT NULL,
  PRIMARY KEY (run_id, stage)
) WITHOUT ROWID;
)sql";

// A prepared statement, finalized when it goes.
class Statement {
 public:
  explicit Statement(sqlite3_stmt* statement) : statement_(statement) {}
  Statement(Statement&& other) noexcept : statement_(std::exchange(other.statement_, nullptr)) {}
  Statement& operator=(Statement&&) = delete;
  ~Statement() { sqlite3_finalize(statement_); }

  // Parameters are numbered from 1, as in SQLite.
  void bind(int index, std::string_view text) {
    sqlite3_bind_text(statement_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  }
  void bind(int index, double value) { sqlite3_bind_double(statement_, index, value); }
  void bind(int index, int64_t value) { sqlite3_bind_int64(statement_, index, value); }
  void bind(int index, const std::optional<double>& value) {
    if (value) bind(index, *value);
    else sqlite3_bind_null(statement_, index);
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int step() { return sqlite3_step(statement_); }
  void reset() {
    sqlite3_reset(statement_);
    sqlite3_clear_bindings(statement_);
  }

  std::string text(int column) const {
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(statement_, column));
    return text == nullptr ? std::string() : std::string(text, sqlite3_column_bytes(statement_, column));
  }
  std::optional<double> real(int column) const {
    if (sqlite3_column_type(statement_, column) == SQLITE_NULL) return std::nullopt;
    return sqlite3_column_double(statement_, column);
  }
  int64_t integer(int column) const { return sqlite3_column_int64(statement_, column); }

 private:
  sqlite3_stmt* statement_;
};

}  // namespace

class ResultsConnection {
 public:
  sqlite3* db = nullptr;
  fs::path path;
  std::string file;  // the path as the caller wrote it, the prefix of every message

  ~ResultsConnection() { sqlite3_close_v2(db); }

  absl::Status error(int code, std::string_view doing) const {
    const std::string detail = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(code);
    if ((code & 0xff) == SQLITE_NOTADB) {
      return absl::FailedPreconditionError(fmt::format("{}: not a ProtoQuant results store ({})", file, detail));
    }
    if ((code & 0xff) == SQLITE_BUSY || (code & 0xff) == SQLITE_LOCKED) {
      return absl::UnavailableError(fmt::format("{}: {}: {} (another process held the store too long)", file, doing, detail));
    }
    return absl::InternalError(fmt::format("{}: {}: {}", file, doing, detail));
  }

  absl::Status exec(const char* sql, std::string_view doing) {
    const int code = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
    return code == SQLITE_OK ? absl::OkStatus() : error(code, doing);
  }

  absl::StatusOr<Statement> prepare(std::string_view sql) {
    sqlite3_stmt* statement = nullptr;
    const int code = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &statement, nullptr);
    if (code != SQLITE_OK) return error(code, "preparing a query");
    return Statement(statement);
  }

  // The first column of a query's single row, as an integer (PRAGMAs, counts).
  absl::StatusOr<int64_t> scalar(std::string_view sql, std::string_view doing) {
    PQ_ASSIGN_OR_RETURN(Statement statement, prepare(sql));
    const int code = statement.step();
    if (code != SQLITE_ROW) return error(code, doing);
    return statement.integer(0);
  }
};

namespace {

// A transaction rolled back unless committed, so every early return leaves nothing behind.
class Transaction {
 public:
  static absl::StatusOr<Transaction> begin(ResultsConnection& connection, bool write) {
    // IMMEDIATE takes the write lock now: a writer that began DEFERRED would read first and then
    // get SQLITE_BUSY_SNAPSHOT on upgrading, which no busy timeout waits out.
    PQ_RETURN_IF_ERROR(connection.exec(write ? "BEGIN IMMEDIATE" : "BEGIN", "starting a transaction"));
    return Transaction(connection);
  }
  Transaction(Transaction&& other) noexcept : connection_(std::exchange(other.connection_, nullptr)) {}
  Transaction& operator=(Transaction&&) = delete;
  ~Transaction() {
    if (connection_ != nullptr) sqlite3_exec(connection_->db, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  absl::Status commit() {
    PQ_RETURN_IF_ERROR(connection_->exec("COMMIT", "committing"));
    connection_ = nullptr;
    return absl::OkStatus();
  }

 private:
  explicit Transaction(ResultsConnection& connection) : connection_(&connection) {}
  ResultsConnection* connection_;
};

}  // namespace

ResultsStore::ResultsStore(std::unique_ptr<ResultsConnection> connection) : connection_(std::move(connection)) {}
ResultsStore::ResultsStore(ResultsStore&&) noexcept = default;
ResultsStore& ResultsStore::operator=(ResultsStore&&) noexcept = default;
ResultsStore::~ResultsStore() = default;

const fs::path& ResultsStore::path() const { return connection_->path; }

absl::Status ResultsStore::check_writable(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return absl::InvalidArgumentError(fmt::format("{}: is a folder, not a results store", path.string()));
  // The file, and its folder too: SQLite's WAL mode writes results.db-wal and -shm beside it.
  if (fs::exists(path, ec) && ::access(path.c_str(), W_OK) != 0) {
    return absl::PermissionDeniedError(fmt::format("{}: cannot record runs there: {}", path.string(), std::strerror(errno)));
  }
  fs::path probe = fs::absolute(path, ec).parent_path();
  while (!probe.empty() && !fs::exists(probe, ec) && probe != probe.parent_path()) probe = probe.parent_path();
  if (::access(probe.c_str(), W_OK) != 0) {
    return absl::PermissionDeniedError(fmt::format("{}: cannot record runs there: {}: {}", path.string(),
                                                   probe.string(), std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<ResultsStore> ResultsStore::open(const fs::path& path, ResultsStoreOptions options) {
  auto connection = std::make_unique<ResultsConnection>();
  connection->path = path;
  connection->file = path.string();
  const std::string& file = connection->file;
  std::error_code ec;
  if (!options.create_if_missing && !fs::exists(path, ec)) {
    return absl::NotFoundError(fmt::format("{}: no results store there (pass --db FILE)", file));
  }
  if (fs::is_directory(path, ec)) return absl::InvalidArgumentError(fmt::format("{}: is a folder, not a results store", file));
  if (options.create_if_missing && !path.parent_path().empty()) fs::create_directories(path.parent_path(), ec);

  const int flags = SQLITE_OPEN_READWRITE | (options.create_if_missing ? SQLITE_OPEN_CREATE : 0);
  const int opened = sqlite3_open_v2(path.c_str(), &connection->db, flags, nullptr);
  if (opened != SQLITE_OK) return connection->error(opened, "opening");
  sqlite3_extended_result_codes(connection->db, 1);
  sqlite3_busy_timeout(connection->db, options.busy_timeout_ms);

  // The first statement reads the header: a file that is not SQLite fails here with NOTADB.
  // WAL lets readers run beside a writer and makes each commit one append.
  PQ_RETURN_IF_ERROR(connection->exec("PRAGMA journal_mode = WAL", "switching to WAL"));
  PQ_RETURN_IF_ERROR(connection->exec("PRAGMA foreign_keys = ON", "enabling foreign keys"));

  // Created under the write lock, so processes opening a new store together create it once.
  PQ_ASSIGN_OR_RETURN(Transaction transaction, Transaction::begin(*connection, options.create_if_missing));
  PQ_ASSIGN_OR_RETURN(const int64_t tables, connection->scalar("SELECT count(*) FROM sqlite_master", "reading the schema"));
  PQ_ASSIGN_OR_RETURN(const int64_t application, connection->scalar("PRAGMA application_id", "reading the header"));
  PQ_ASSIGN_OR_RETURN(const int64_t version, connection->scalar("PRAGMA user_version", "reading the header"));
  if (tables == 0) {
    if (!options.create_if_missing) {
      return absl::FailedPreconditionError(fmt::format("{}: not a ProtoQuant results store (empty database)", file));
    }
    PQ_RETURN_IF_ERROR(connection->exec(kSchema, "creating the schema"));
    PQ_RETURN_IF_ERROR(connection->exec(fmt::format("PRAGMA application_id = {}; PRAGMA user_version = {}",
                                                    kApplicationId, kResultsSchemaVersion).c_str(),
                                        "writing the header"));
  } else if (application != kApplicationId) {
    return absl::FailedPreconditionError(fmt::format("{}: not a ProtoQuant results store", file));
  } else if (version > kResultsSchemaVersion) {
    return absl::FailedPreconditionError(fmt::format(
        "{}: results store schema {} is newer than this build reads ({}); update ProtoQuant", file, version,
        kResultsSchemaVersion));
  }
  // Versions below kResultsSchemaVersion would be migrated here; 1 is the first.
  PQ_RETURN_IF_ERROR(transaction.commit());
  return ResultsStore(std::move(connection));
}

absl::Status ResultsStore::add_run(const json& results) {
  ResultsConnection& db = *connection_;
  PQ_ASSIGN_OR_RETURN(const RunFields fields, read_run_fields(results, db.file));
  const auto params = flatten_parameters(fields.manifest);
  const auto metric_values = flatten_metrics(fields.metrics);
  const std::string run_context = fmt::format("recording run '{}'", fields.run_id);

  PQ_ASSIGN_OR_RETURN(Transaction transaction, Transaction::begin(db, /*write=*/true));
  {
    PQ_ASSIGN_OR_RETURN(Statement insert, db.prepare(
        "INSERT INTO runs (run_id, finished_at, experiment, toolkit_version, toolkit_commit, manifest_hash, "
        "cpu_model, run_dir, total_seconds, results) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"));
    int column = 1;
    for (const std::string* text : {&fields.run_id, &fields.finished_at, &fields.experiment, &fields.toolkit_version,
                                    &fields.toolkit_commit, &fields.manifest_hash, &fields.cpu_model, &fields.run_dir}) {
      insert.bind(column++, *text);
    }
    insert.bind(column++, fields.total_seconds);
    insert.bind(column, results.dump());
    if (const int code = insert.step(); code != SQLITE_DONE) {
      if (code == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return absl::AlreadyExistsError(fmt::format("{}: run '{}' is already recorded", db.file, fields.run_id));
      }
      return db.error(code, run_context);
    }
  }
  {
    PQ_ASSIGN_OR_RETURN(Statement insert, db.prepare("INSERT INTO params (run_id, key, value, json) VALUES (?1, ?2, ?3, ?4)"));
    for (const auto& [key, value] : params) {
      insert.reset();
      insert.bind(1, fields.run_id);
      insert.bind(2, key);
      insert.bind(3, parameter_text(value));
      insert.bind(4, value.dump());
      if (const int code = insert.step(); code != SQLITE_DONE) {
        if (code == SQLITE_CONSTRAINT_PRIMARYKEY) {
          return absl::InvalidArgumentError(fmt::format(
              "{}: run '{}': parameter '{}' appears twice once tables are flattened to dotted keys", db.file,
              fields.run_id, key));
        }
        return db.error(code, run_context);
      }
    }
  }
  {
    PQ_ASSIGN_OR_RETURN(Statement insert, db.prepare("INSERT INTO metrics (run_id, key, value) VALUES (?1, ?2, ?3)"));
    for (const auto& [key, value] : metric_values) {
      insert.reset();
      insert.bind(1, fields.run_id);
      insert.bind(2, key);
      insert.bind(3, value);
      if (const int code = insert.step(); code != SQLITE_DONE) {
        if (code == SQLITE_CONSTRAINT_PRIMARYKEY) {
          return absl::InvalidArgumentError(fmt::format(
              "{}: run '{}': metric '{}' appears twice once objects are flattened to dotted keys", db.file,
              fields.run_id, key));
        }
        return db.error(code, run_context);
      }
    }
  }
  {
    PQ_ASSIGN_OR_RETURN(Statement insert, db.prepare(
        "INSERT INTO stages (run_id, stage, seconds, reused, key) VALUES (?1, ?2, ?3, ?4, ?5)"));
    for (const auto& [stage, record] : fields.stages) {
      insert.reset();
      insert.bind(1, fields.run_id);
      insert.bind(2, stage);
      insert.bind(3, record.seconds);
      insert.bind(4, static_cast<int64_t>(record.reused));
      insert.bind(5, record.key);
      if (const int code = insert.step(); code != SQLITE_DONE) return db.error(code, run_context);
    }
  }
  return transaction.commit();
}

absl::StatusOr<std::vector<RunRecord>> ResultsStore::runs(const RunQuery& query) const {
  ResultsConnection& db = *connection_;
  // One read transaction: the four queries see the same snapshot while other processes write.
  PQ_ASSIGN_OR_RETURN(Transaction transaction, Transaction::begin(db, /*write=*/false));

  if (!query.where.empty()) {
    std::vector<std::string> keys;
    PQ_ASSIGN_OR_RETURN(Statement statement, db.prepare("SELECT DISTINCT key FROM params ORDER BY key"));
    int code;
    while ((code = statement.step()) == SQLITE_ROW) keys.push_back(statement.text(0));
    if (code != SQLITE_DONE) return db.error(code, "reading parameter names");
    for (const auto& filter : query.where) {
      if (std::binary_search(keys.begin(), keys.end(), filter.key)) continue;
      const std::string hint = closest_match(filter.key, keys);
      return absl::InvalidArgumentError(fmt::format("{}: no recorded run has a parameter '{}'{}", db.file, filter.key,
                                                    hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint)));
    }
  }
  std::string selected = "WITH selected AS (SELECT run_id FROM runs WHERE 1";
  for (size_t i = 0; i < query.where.size(); ++i) {
    selected += fmt::format(" AND run_id IN (SELECT run_id FROM params WHERE key = ?{} AND value = ?{})", 2 * i + 1, 2 * i + 2);
  }
  selected += ") ";
  auto prepare = [&](const std::string& sql) -> absl::StatusOr<Statement> {
    PQ_ASSIGN_OR_RETURN(Statement statement, db.prepare(selected + sql));
    for (size_t i = 0; i < query.where.size(); ++i) {
      statement.bind(static_cast<int>(2 * i + 1), query.where[i].key);
      statement.bind(static_cast<int>(2 * i + 2), query.where[i].value);
    }
    return statement;
  };

  std::vector<RunRecord> runs;
  std::map<std::string, size_t> index;
  // finished_at has whole seconds: runs that finish within one second (a run and the evaluate
  // that follows it) are in the order they were recorded, which is what "latest" means to the
  // leaderboard. runs.rowid is that order (run_id, random in its last 48 bits, is not).
  PQ_ASSIGN_OR_RETURN(Statement run_rows, prepare(
      "SELECT run_id, finished_at, experiment, toolkit_version, toolkit_commit, manifest_hash, cpu_model, run_dir, "
      "total_seconds FROM runs JOIN selected USING (run_id) ORDER BY finished_at, runs.rowid"));
  int code;
  while ((code = run_rows.step()) == SQLITE_ROW) {
    RunRecord run;
    int column = 0;
    for (std::string* text : {&run.run_id, &run.finished_at, &run.experiment, &run.toolkit_version, &run.toolkit_commit,
                              &run.manifest_hash, &run.cpu_model, &run.run_dir}) {
      *text = run_rows.text(column++);
    }
    run.total_seconds = run_rows.real(column);
    index[run.run_id] = runs.size();
    runs.push_back(std::move(run));
  }
  if (code != SQLITE_DONE) return db.error(code, "reading runs");

  PQ_ASSIGN_OR_RETURN(Statement param_rows, prepare("SELECT run_id, key, value, json FROM params JOIN selected USING (run_id)"));
  while ((code = param_rows.step()) == SQLITE_ROW) {
    const json value = json::parse(param_rows.text(3), nullptr, /*allow_exceptions=*/false);
    if (value.is_discarded()) {
      return absl::DataLossError(fmt::format("{}: run '{}': parameter '{}' holds invalid JSON", db.file,
                                             param_rows.text(0), param_rows.text(1)));
    }
    runs[index.at(param_rows.text(0))].params[param_rows.text(1)] = RunParameter{param_rows.text(2), value};
  }
  if (code != SQLITE_DONE) return db.error(code, "reading parameters");

  PQ_ASSIGN_OR_RETURN(Statement metric_rows, prepare("SELECT run_id, key, value FROM metrics JOIN selected USING (run_id)"));
  while ((code = metric_rows.step()) == SQLITE_ROW) {
    runs[index.at(metric_rows.text(0))].metrics[metric_rows.text(1)] = metric_rows.real(2).value_or(NAN);
  }
  if (code != SQLITE_DONE) return db.error(code, "reading metrics");

  PQ_ASSIGN_OR_RETURN(Statement stage_rows, prepare(
      "SELECT run_id, stage, seconds, reused, key FROM stages JOIN selected USING (run_id)"));
  while ((code = stage_rows.step()) == SQLITE_ROW) {
    runs[index.at(stage_rows.text(0))].stages[stage_rows.text(1)] =
        StageRecord{stage_rows.real(2), stage_rows.integer(3) != 0, stage_rows.text(4)};
  }
  if (code != SQLITE_DONE) return db.error(code, "reading stages");
  PQ_RETURN_IF_ERROR(transaction.commit());
  return runs;
}

absl::StatusOr<json> ResultsStore::results(const std::string& run_id) const {
  ResultsConnection& db = *connection_;
  PQ_ASSIGN_OR_RETURN(Statement statement, db.prepare("SELECT results FROM runs WHERE run_id = ?1"));
  statement.bind(1, run_id);
  const int code = statement.step();
  if (code == SQLITE_DONE) return absl::NotFoundError(fmt::format("{}: no run '{}' recorded", db.file, run_id));
  if (code != SQLITE_ROW) return db.error(code, "reading results");
  json results = json::parse(statement.text(0), nullptr, /*allow_exceptions=*/false);
  if (results.is_discarded()) return absl::DataLossError(fmt::format("{}: run '{}': results hold invalid JSON", db.file, run_id));
  return results;
}

}  // namespace protoquant
