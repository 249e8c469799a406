// FunnyBirds' evaluation protocols (Hesse, Schaub-Meyer, Roth, ICCV 2023;
// visinf/funnybirds-framework, evaluation_protocols.py), on any dataset that re-renders its
// samples without some parts or background objects (Dataset::get_intervened_batch). They judge
// an explanation by intervening on the input: remove what it calls important (or unimportant)
// and see whether the model's output moves as it should. docs/METRICS.md has each definition as
// the reference computes it and where this one differs.
//
// The engine knows nothing of prototypes: it takes a model that gives logits, and, for the
// unaltered images, every class's part importance (ProtocolForward), so the tests drive it with
// models and explainers whose right answers are known.
#pragma once

#include <functional>
#include <vector>

#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "protoquant/dataset.h"
#include "protoquant/eval_dump.h"

namespace protoquant::metrics {

// A part-importance row's columns: 0 the background, 1 + p part p, 1 + K + k background object k:
// the part map's code c >= 0 at column c, -(k + 1) at K + 1 + k (K = the dataset's parts).
torch::Tensor code_columns(const torch::Tensor& part_maps, int64_t parts);

// FunnyBirds' minimal sufficient part sets of class c: the smallest sets of its parts that no
// other class has all of (datasets/funny_birds.py, get_minimal_sufficient_part_sets; without its
// quirk that gives the last class none).
std::vector<std::vector<int64_t>> minimal_sufficient_part_sets(const std::vector<std::vector<int64_t>>& class_parts,
                                                               int64_t c);

// Spearman's rank correlation (average ranks for ties); NaN when either side is constant, as
// scipy.stats.spearmanr.
double spearman(const std::vector<double>& a, const std::vector<double>& b);

struct FunnyBirdsSettings {
  std::vector<double> thresholds;  // "important": importance > threshold x the total (reference: 80 in 0.01 .. 0.5)
  double tolerance = 0.05;         // D and BI: an output change under 5 % of |logit| is no change
  int64_t render_batch = 256;      // re-rendered images per forward pass

  nlohmann::json to_json() const;
};

struct ProtocolOutput {
  torch::Tensor logits;      // B x C' (C' >= the dataset's classes)
  torch::Tensor importance;  // B x C x columns, when asked: every class's part importance
};
// The model on a batch (images and part maps), with importance when `explain`; `columns` is
// code_columns(batch.part_maps) and `num_columns` the importance rows' width.
using ProtocolForward = std::function<absl::StatusOr<ProtocolOutput>(const Batch& batch, const torch::Tensor& columns,
                                                                     int64_t num_columns, bool explain)>;
using ProtocolRender =
    std::function<absl::StatusOr<Batch>(const torch::Tensor& indices, const std::vector<Intervention>& interventions)>;

// The protocols' state over the images seen: sums per threshold and counts, so shards merge.
class FunnyBirdsProtocols {
 public:
  FunnyBirdsProtocols(FunnyBirdsSettings settings, std::vector<std::vector<int64_t>> class_parts, int64_t parts);

  // Samples `indices` of the evaluated split through every protocol.
  absl::Status update(const torch::Tensor& indices, const ProtocolForward& forward, const ProtocolRender& render,
                      EvalDump* dump);
  void merge(const FunnyBirdsProtocols& other);
  torch::Tensor state() const;  // fp64, fixed layout
  absl::Status load_state(const torch::Tensor& state);
  // {"values": {...}, "settings": {...}} at the threshold that maximises
  // CSDC / 3 + PC / 3 + DC / 3 + D, as evaluate_explainability.py picks it.
  nlohmann::json compute() const;

 private:
  int64_t thresholds() const { return static_cast<int64_t>(settings_.thresholds.size()); }

  FunnyBirdsSettings settings_;
  std::vector<std::vector<int64_t>> class_parts_;
  std::vector<std::vector<std::vector<int64_t>>> sufficient_;  // per class
  // Per class: target sensitivity's pair of contrasting classes and the parts each shares with it.
  struct ContrastPair {
    bool found = false;
    int64_t c1 = 0, c2 = 0;
    std::vector<int64_t> o1, o2;
  };
  std::vector<ContrastPair> contrast_;
  int64_t parts_;
  // Per threshold.
  torch::Tensor csdc_, pc_, dc_, d_;  // T fp64 sums: CSDC's best recall, PC and DC hits, D's share of irrelevant
  // Counts.
  double images_ = 0, correct_ = 0, csdc_images_ = 0, d_images_ = 0;
  double sd_sum_ = 0, sd_images_ = 0;
  double ts_hits_ = 0, ts_entries_ = 0, ts_no_pair_ = 0, ts_assumption_failed_ = 0;
  double bi_relevant_ = 0, bi_objects_ = 0;
};

}  // namespace protoquant::metrics
