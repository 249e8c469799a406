#include "part_hits.h"

#include <algorithm>
#include <map>

#include <torch/torch.h>

namespace protoquant::metrics {

std::vector<int64_t> part_groups(const std::vector<std::string>& names, bool merge_left_right, int64_t* groups) {
  std::map<std::string, int64_t> group_of;
  std::vector<int64_t> group(names.size());
  for (size_t k = 0; k < names.size(); ++k) {
    std::string name = names[k];
    if (merge_left_right && name.rfind("left ", 0) == 0) {
      const std::string right = "right " + name.substr(5);
      if (std::find(names.begin(), names.end(), right) != names.end()) name = right;
    }
    group[k] = group_of.emplace(name, static_cast<int64_t>(group_of.size())).first->second;
  }
  *groups = static_cast<int64_t>(group_of.size());
  return group;
}

torch::Tensor group_matrix(const std::vector<int64_t>& group, int64_t groups) {
  torch::Tensor m = torch::zeros({static_cast<int64_t>(group.size()), groups});
  for (size_t k = 0; k < group.size(); ++k) m[static_cast<int64_t>(k)][group[k]] = 1;
  return m;
}

PartHits part_hits(const torch::Tensor& similarity, const torch::Tensor& parts, const torch::Tensor& labels,
                   const torch::Tensor& classes, int64_t height, int64_t width, const LocalisationSettings& settings) {
  const int64_t b = similarity.size(0), p = similarity.size(1), k = parts.size(1);
  PartHits out;
  // classes is P x C: the pair (i, p) is evaluated when classes[p, label_i].
  out.evaluated = classes.to(torch::kCPU).t().index_select(0, labels.to(torch::kCPU)).contiguous();  // B x P
  out.hits = torch::zeros({b, p, k}, torch::kBool);
  const torch::Tensor pairs = out.evaluated.flatten().nonzero().squeeze(1);  // indices i * P + p
  if (pairs.numel() == 0) return out;
  const torch::Tensor flat = similarity.detach().flatten(0, 1);
  const torch::Tensor all_parts = parts.to(torch::kCPU);
  // In chunks: the upsampled maps of a whole batch would be B x P x H x W floats.
  constexpr int64_t kChunk = 2048;
  for (int64_t begin = 0; begin < pairs.size(0); begin += kChunk) {
    const torch::Tensor chunk = pairs.slice(0, begin, std::min(pairs.size(0), begin + kChunk));
    const torch::Tensor maps = flat.index_select(0, chunk.to(flat.device()));
    const torch::Tensor peaks = peak_positions(upsample_maps(maps, height, width, settings.upsampling), settings.ties);
    const torch::Tensor pair_parts = all_parts.index_select(0, torch::div(chunk, p, "floor"));
    out.hits.view({b * p, k}).index_copy_(0, chunk, parts_near_peaks(peaks, pair_parts, height, width, settings));
  }
  return out;
}

}  // namespace protoquant::metrics
