// Atomic writes: the content goes to a temporary file in the same folder, is flushed to disk,
// then renamed over the destination, so a reader never sees a half-written file.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

#include <absl/status/status.h>
#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/serialize/output-archive.h>

namespace protoquant {

absl::Status write_file_atomic(const std::filesystem::path& path, const std::string& content);

// A JSON file, whole: NotFound when it cannot be opened, DataLoss when it does not parse.
absl::StatusOr<nlohmann::json> read_json_file(const std::filesystem::path& path);

// Runs `writer(temporary_path)` and renames the result into place (for writers that need a path,
// such as torch::save).
absl::Status write_atomic_with(const std::filesystem::path& path,
                               const std::function<absl::Status(const std::filesystem::path&)>& writer);

// A LibTorch archive, atomically; a full disk is one error naming the file.
absl::Status save_archive(torch::serialize::OutputArchive& archive, const std::filesystem::path& path);

// torch::save of a module's parameters and buffers, atomically.
absl::Status save_module(const torch::nn::Module& module, const std::filesystem::path& path);
absl::Status load_module(torch::nn::Module& module, const std::filesystem::path& path);

}  // namespace protoquant
