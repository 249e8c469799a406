// What consistency and stability share (EvalProtoPNet's get_corresponding_object_parts): for
// every (image, prototype) pair where the image's class is one of the prototype's classes, the
// parts that lie in the region around the peak of the prototype's upsampled similarity map.
#pragma once

#include <string>
#include <vector>

#include <torch/types.h>

#include "protoquant/localisation.h"

namespace protoquant::metrics {

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

}  // namespace protoquant::metrics
