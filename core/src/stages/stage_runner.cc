#include "stages/stage_runner.h"

#include <optional>

#include <fmt/format.h>

#include "protoquant/atomic_file.h"
#include "protoquant/process_group.h"
#include "protoquant/status.h"

namespace protoquant {
namespace fs = std::filesystem;

namespace {

std::string short_key(const std::string& key) { return key.substr(0, 12); }

// A finished run's stage, from its record in the run folder and the files placed beside it.
absl::StatusOr<StageOutcome> open_stage(RunState& run, Stage& stage, const fs::path& record_file) {
  auto record = read_json_file(record_file);
  if (!record.ok()) {
    return absl::FailedPreconditionError(
        fmt::format("{}: the run has no finished '{}' stage (run it first)", run.run_dir.string(), stage.name()));
  }
  run.results["stages"][stage.name()] = *record;
  return StageOutcome{*record, true};
}

absl::StatusOr<StageOutcome> reuse_or_compute(RunState& run, Stage& stage, const fs::path& record_file) {
  const auto start = Clock::now();
  const std::string name = stage.name();
  const StageKey& key = run.keys.at(name);
  const std::map<std::string, fs::path> files = stage.outputs(run);
  const bool writer = is_writer();
  auto reuse = [&](const nlohmann::json& artifact) -> absl::StatusOr<StageOutcome> {
    for (const auto& [file, destination] : files) {
      PQ_RETURN_IF_ERROR(place_file(run.store.folder(name, key.key) / file, destination));
    }
    nlohmann::json record = artifact["record"];
    record["computed_seconds"] = record.value("seconds", 0.0);
    record["seconds"] = seconds_since(start);
    record["reused"] = true;
    fmt::print(stderr, "[{}] reused {} from {}\n", name, short_key(key.key), run.store.root().string());
    PQ_RETURN_IF_ERROR(write_file_atomic(record_file, record.dump(2) + "\n"));
    return StageOutcome{record, true};
  };
  // A non-writer's copy of what rank 0 filed or placed, once rank 0 says it is there.
  auto follow = [&](const absl::Status& rank0) -> absl::StatusOr<StageOutcome> {
    PQ_RETURN_IF_ERROR(rank0);
    PQ_ASSIGN_OR_RETURN(nlohmann::json record, read_json_file(record_file));
    return StageOutcome{record, record.value("reused", false)};
  };
  const bool force = run.forced(name);
  std::optional<nlohmann::json> filed;
  std::optional<ArtifactStore::Lock> lock;
  absl::Status looked = absl::OkStatus();
  if (writer) {
    if (!force) filed = run.store.find(name, key.key);
    if (!filed) {
      // Under the lock: a sweep member computing the same stage files it first, then this one reuses it.
      auto locked = run.store.lock(name, key.key);
      if (locked.ok()) {
        lock.emplace(std::move(*locked));
        if (!force) filed = run.store.find(name, key.key);
      } else {
        looked = locked.status();
      }
    }
  }
  PQ_RETURN_IF_ERROR(rank0_status(looked));
  if (rank0_decides(filed.has_value())) {
    if (!writer) return follow(rank0_status(absl::OkStatus()));
    auto outcome = reuse(*filed);
    PQ_RETURN_IF_ERROR(rank0_status(outcome.status()));
    return outcome;
  }
  std::error_code ec;
  if (writer) fs::create_directories(run.store.work_folder(name, key.key), ec);
  PQ_RETURN_IF_ERROR(stage.read_inputs(run));
  const auto compute_start = Clock::now();
  PQ_ASSIGN_OR_RETURN(nlohmann::json record, stage.compute(run));
  record["key"] = key.key;
  record["seconds"] = seconds_since(compute_start);
  record["reused"] = false;
  if (collectives().world_size() > 1) record["world_size"] = collectives().world_size();
  if (!writer) return follow(rank0_status(absl::OkStatus()));
  absl::Status filed_now = [&]() -> absl::Status {
    PQ_RETURN_IF_ERROR(run.store.publish(name, key.key, key.inputs, record, files, /*replace=*/force));
    if (force && run.settings.recomputed) run.settings.recomputed->insert(name + "/" + key.key);
    fmt::print(stderr, "[{}] done in {:.1f} s (key {})\n", name, record["seconds"].get<double>(), short_key(key.key));
    return write_file_atomic(record_file, record.dump(2) + "\n");
  }();
  PQ_RETURN_IF_ERROR(rank0_status(filed_now));
  return StageOutcome{record, false};
}

}  // namespace

absl::StatusOr<StageOutcome> run_stage(RunState& run, Stage& stage) {
  PQ_RETURN_IF_ERROR(stage.build(run));
  const fs::path record_file = run.run_dir / "stages" / (stage.name() + ".json");
  PQ_ASSIGN_OR_RETURN(StageOutcome outcome, run.opening() ? open_stage(run, stage, record_file)
                                                           : reuse_or_compute(run, stage, record_file));
  run.results["stages"][stage.name()] = outcome.record;
  if (outcome.reused) PQ_RETURN_IF_ERROR(stage.load(run, outcome.record));
  PQ_RETURN_IF_ERROR(stage.finish(run, outcome.record));
  return outcome;
}

}  // namespace protoquant
