// What consistency and stability share (EvalProtoPNet's get_corresponding_object_parts): for
// every (image, prototype) pair where the image's class is one of the prototype's classes, the
// parts that lie in the region around the peak of the prototype's upsampled similarity map.
#pragma once

#include <string>
#include <vector>

#include <torch/types.h>

#include <absl/status/status.h>

#include "protoquant/localisation.h"
#include "protoquant/metric.h"

namespace protoquant::metrics {

// A localising metric's settings for its pass (LocalisationSettings::for_pass on the context's
// image, map and geometry), or the error with the metric's name: what every begin() does first.
absl::Status resolve_localisation(LocalisationSettings& settings, const EvalContext& context, const std::string& metric);

struct PartHits {
  torch::Tensor evaluated;  // B x P bool: the pair is evaluated (the label is a class of p)
  torch::Tensor hits;       // B x P x K bool (false where not evaluated)
};

// Part groups by name: with `merge_left_right`, "left X" counts as "right X" when both exist
// (CUB's 15 parts become 12); otherwise every part is its own group. Returns K group ids.
std::vector<int64_t> part_groups(const std::vector<std::string>& names, bool merge_left_right, int64_t* groups);

// K x G float one-hot of `group` (for merging per-part counts by OR: x @ onehot > 0).
torch::Tensor group_matrix(const std::vector<int64_t>& group, int64_t groups);

// similarity B x P x h x w, parts B x K x 3, labels B, classes P x C bool (all on any device).
PartHits part_hits(const torch::Tensor& similarity, const torch::Tensor& parts, const torch::Tensor& labels,
                   const torch::Tensor& classes, int64_t height, int64_t width, const LocalisationSettings& settings);

// Reference levels of a localising metric on the same images and settings as the model's maps
// (METRICS.md, "Chance and oracle levels"). Both place single-cell peaks through the same
// upsampling and tie rule, as a similarity map that peaks at that one cell would localise:
//   chance: each (image, prototype) map peaks at a random cell, seeded per image;
//   oracle: for each part, the map peaks at the cell whose peak lands nearest its keypoint.
class PeakGeometry {
 public:
  // An h x w grid of cells over H x W pixels.
  PeakGeometry(int64_t grid_height, int64_t grid_width, int64_t height, int64_t width, const LocalisationSettings& settings);
  bool fits(int64_t grid_height, int64_t grid_width) const { return grid_h_ == grid_height && grid_w_ == grid_width; }
  int64_t cells() const { return grid_h_ * grid_w_; }
  // (h * w) x 2 (row, column): where a map that peaks at cell c alone localises.
  const torch::Tensor& cell_peaks() const { return peaks_; }
  // parts B x K x 3 -> B x K int64: per keypoint, the cell whose peak is nearest it (Chebyshev
  // distance to the truncated keypoint; ties to the lower cell).
  torch::Tensor nearest_cells(const torch::Tensor& parts) const;

 private:
  int64_t grid_h_, grid_w_;
  torch::Tensor peaks_;
};

// B x K bool: part k is hit when the map peaks at the cell nearest its own keypoint (oracle).
torch::Tensor oracle_part_hits(const PeakGeometry& geometry, const torch::Tensor& parts, int64_t height, int64_t width,
                               const LocalisationSettings& settings);
// The chance level's peak cells: per image, `per_image` cells in [0, cells) drawn from a CPU
// generator seeded with seed * 1000003 + its index (so any batching or sharding draws the same):
// B * per_image int64, image by image.
torch::Tensor random_cells(const torch::Tensor& indices, int64_t cells, int64_t per_image, uint64_t seed);

// B x P x K bool: the parts near each (image, prototype) pair's random peak (chance).
torch::Tensor chance_part_hits(const PeakGeometry& geometry, const torch::Tensor& parts, const torch::Tensor& indices,
                               int64_t prototypes, uint64_t seed, int64_t height, int64_t width,
                               const LocalisationSettings& settings);

}  // namespace protoquant::metrics
