// The trained model in a file Python reads with a plain `torch.load(path)`: a dict whose keys are
// "backbone.<name>", "quantizer.<name>", "head.<name>" (every parameter and buffer, LibTorch
// names), "head.class_weights" (relu(W), C x P), "head.prototypes" (P x d), "prototype_groups"
// and "config" (the resolved manifest as JSON text). See README, "Using a trained model in Python".
#pragma once

#include <filesystem>

#include <absl/status/status.h>
#include <nlohmann/json.hpp>

#include "protoquant/model.h"

namespace protoquant {

absl::Status export_model(const Model& model, const nlohmann::json& config, const std::filesystem::path& path);

}  // namespace protoquant
