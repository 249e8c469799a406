// `protoquant evaluate --dump DIR`: every metric's inputs as NumPy .npy files with a dump.json
// index that says what each array is, so any other implementation can recompute the numbers
// from the same inputs (researchers compare metric code this way). Arrays are appended batch by
// batch (rows along axis 0) or set whole; names are "<instance>/<array>" for a metric's own.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <absl/status/status.h>
#include <nlohmann/json.hpp>
#include <torch/types.h>

namespace protoquant {

// One array as a NumPy .npy file (format 1.0, C order, little-endian): float32, float64, int64,
// int32, uint8 and bool tensors. Written atomically.
absl::Status write_npy(const std::filesystem::path& path, const torch::Tensor& array);

class EvalDump {
 public:
  EvalDump();
  // A view whose names are prefixed "<prefix>/"; it shares this dump's arrays.
  EvalDump scoped(const std::string& prefix) const;

  void append(const std::string& name, const torch::Tensor& rows, const std::string& description);
  void set(const std::string& name, const torch::Tensor& array, const std::string& description);
  void note(const std::string& key, const nlohmann::json& value);  // settings, sizes, anything not an array

  // Writes <dir>/<name>.npy for every array (a name's "/" becomes a folder) and <dir>/dump.json.
  absl::Status write(const std::filesystem::path& dir) const;

 private:
  struct Array {
    std::vector<torch::Tensor> parts;
    std::string description;
  };
  struct State {
    std::map<std::string, Array> arrays;
    nlohmann::json notes = nlohmann::json::object();
  };
  std::shared_ptr<State> state_;
  std::string prefix_;
};

}  // namespace protoquant
