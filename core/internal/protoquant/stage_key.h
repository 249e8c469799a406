// A stage's key: the SHA-256 of the canonical JSON of everything the stage's outputs depend on.
// nlohmann::json writes object keys sorted and numbers in their shortest round-trip form, so the
// same inputs give the same text, and so the same key, in every process and run.
#pragma once

#include <filesystem>
#include <string>

#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>

namespace protoquant {

// Raised whenever what a stage writes, or how it computes, changes in a way its inputs do not
// show; every key changes with it.
inline constexpr int kStageFormat = 1;

struct StageKey {
  std::string key;        // 64 hex digits
  nlohmann::json inputs;  // what was hashed (filed beside the artifact, for people and diffs)
};

// inputs gets "stage" and "format" added before hashing.
StageKey make_stage_key(const std::string& stage, nlohmann::json inputs);

// The identity of a library file: its name and SHA-256, hashed once per path and process (so a
// library rebuilt while a sweep runs keeps the identity of the code the process loaded).
absl::StatusOr<nlohmann::json> library_identity(const std::filesystem::path& library);

// The core library's identity (the trainer, the stage runner): part of every stage's key.
absl::StatusOr<nlohmann::json> core_identity();

}  // namespace protoquant
