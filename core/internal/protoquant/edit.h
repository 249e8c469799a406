// Stage 4, editing a finished run (METHOD.md): limit each class to its k strongest prototypes,
// remove prototypes no class uses, disable a prototype, or zero one class-prototype weight. The
// edited model goes to <run>/edits/<name>/ (head.pt, protoquant.pt, edit.json) beside the
// original, which is never changed; accuracy and model size are reported before and after.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "protoquant/registry.h"

namespace protoquant {

struct EditOptions {
  std::optional<int64_t> limit_k;                         // keep the k highest weights per class
  bool prune_inactive = false;                            // delete prototypes no class uses
  double threshold = 1e-3;                                // "uses": a weight above this
  bool renormalize = false;                               // pruned prototypes leave the softmax too
  std::vector<int64_t> disable_prototypes;                // zero every class's weight on p
  std::vector<std::pair<int64_t, int64_t>> zero_weights;  // (class, prototype)
  std::string name;                                       // edits/<name>; derived when empty

  bool empty() const {
    return !limit_k && !prune_inactive && disable_prototypes.empty() && zero_weights.empty();
  }
  std::string default_name() const;
};

// Each class's k highest weights kept, the rest zeroed (C x P). Ties at the k-th weight go to the
// lower prototype index, so exactly k survive per class and the edit is deterministic.
torch::Tensor limit_k_weights(const torch::Tensor& weights, int64_t k);

// "CLASS:P" -> (class, prototype), with a one-line error otherwise.
absl::StatusOr<std::pair<int64_t, int64_t>> parse_class_prototype(const std::string& text);

// Applies the edits to a copy of the run's model and writes it; returns edit.json's content.
absl::StatusOr<nlohmann::json> edit_run(const std::filesystem::path& run_dir, const EditOptions& options,
                                        Registry& registry);

}  // namespace protoquant
