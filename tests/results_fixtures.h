// Results JSON in the shape the runner writes to results.json (run_id, finished_at, toolkit,
// manifest_hash, run_dir, experiment, the resolved manifest, metrics by instance, stages,
// environment, total_seconds), for the results-store and leaderboard tests.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace protoquant::testing {

// A quickstart-like resolved manifest; `patch` is merged in (RFC 7386: null deletes a key).
inline nlohmann::json fixture_manifest(const nlohmann::json& patch = nlohmann::json::object()) {
  nlohmann::json manifest = {
      {"experiment", {{"name", "quickstart"}, {"seed", 0}, {"threads", 2}, {"device", "cpu"},
                      {"output", "/tmp/protoquant-runs"}, {"feature_cache", ""}, {"feature_dtype", "fp32"}}},
      {"dataset", {{"type", "idx"}, {"root", "/usr/share/datasets/fashion-mnist"}, {"limit", 2000}}},
      {"backbone", {{"type", "small_cnn"}, {"width", 16}}},
      {"quantizer", {{"type", "vq"}, {"codes", 256}, {"metric", "cosine"}}},
      {"head", {{"type", "protoquant"}, {"tau", 0.1}}},
      {"stages", {{"codebook", {{"epochs", 1}}}, {"head", {{"epochs", 5}, {"lr", 0.01}}}}},
      {"metrics", nlohmann::json::array({{{"type", "accuracy"}, {"top_k", {1, 5}}}})},
  };
  manifest.merge_patch(patch);
  return manifest;
}

inline nlohmann::json fixture_metrics(double accuracy, double top5 = 0.99, double used_codes = 256) {
  return {{"accuracy", {{"accuracy", accuracy}, {"top5_accuracy", top5}}},
          {"codebook", {{"used_codes", used_codes}, {"mean_perplexity", 200.1}, {"note", "kept as JSON only"}}}};
}

inline nlohmann::json fixture_results(const std::string& run_id, const nlohmann::json& manifest,
                                      const nlohmann::json& metrics,
                                      const std::string& finished_at = "2026-12-01T23:00:00Z") {
  const std::string experiment = manifest["experiment"].value("name", "quickstart");
  return {
      {"run_id", run_id},
      {"finished_at", finished_at},
      {"toolkit", {{"version", "0.1.0"}, {"commit", "abc1234def5678"}}},
      {"manifest_hash", "5e3c1f0a9b8d7c6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e"},
      {"run_dir", "/tmp/protoquant-runs/" + run_id},
      {"experiment", experiment},
      {"manifest", manifest},
      {"metrics", metrics},
      {"stages",
       {{"blackbox", {{"seconds", 1.5}, {"reused", true}, {"key", "aa11-" + run_id}, {"epochs_run", 0}}},
        {"head", {{"seconds", 3.25}, {"reused", false}, {"key", "bb22-" + run_id}}}}},
      {"environment", {{"cpu", "Intel(R) Xeon(R) Processor, 2 threads"}, {"cpu_model", "Intel(R) Xeon(R) Processor"},
                       {"threads", 2}}},
      {"total_seconds", 45.6},
  };
}

}  // namespace protoquant::testing
