#include "part_hits.h"

#include <algorithm>
#include <map>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "protoquant/status.h"

namespace protoquant::metrics {

absl::Status resolve_localisation(LocalisationSettings& settings, const EvalContext& context, const std::string& metric) {
  auto resolved = settings.for_pass(context.image_height, context.feature_height, context.geometry);
  if (!resolved.ok()) return annotate(resolved.status(), metric);
  settings = *std::move(resolved);
  return absl::OkStatus();
}

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
    const torch::Tensor peaks = localise_peaks(maps, height, width, settings);
    const torch::Tensor pair_parts = all_parts.index_select(0, torch::div(chunk, p, "floor"));
    out.hits.view({b * p, k}).index_copy_(0, chunk, parts_near_peaks(peaks, pair_parts, height, width, settings));
  }
  return out;
}

PeakGeometry::PeakGeometry(int64_t grid_height, int64_t grid_width, int64_t height, int64_t width,
                           const LocalisationSettings& settings)
    : grid_h_(grid_height), grid_w_(grid_width) {
  const int64_t cells = grid_height * grid_width;
  const torch::Tensor one_hot = torch::eye(cells, torch::kFloat32).view({cells, grid_height, grid_width});
  peaks_ = localise_peaks(one_hot, height, width, settings);
}

torch::Tensor random_cells(const torch::Tensor& indices, int64_t cells, int64_t per_image, uint64_t seed) {
  const torch::Tensor where = indices.to(torch::kCPU, torch::kInt64);
  std::vector<torch::Tensor> drawn;
  for (int64_t i = 0; i < where.size(0); ++i) {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(seed * 1000003ULL + static_cast<uint64_t>(where[i].item<int64_t>()));
    drawn.push_back(torch::randint(cells, {per_image}, generator, torch::kInt64));
  }
  return drawn.empty() ? torch::zeros({0}, torch::kInt64) : torch::cat(drawn);
}

torch::Tensor PeakGeometry::nearest_cells(const torch::Tensor& parts) const {
  const torch::Tensor keypoints = parts.to(torch::kCPU, torch::kFloat32).narrow(2, 0, 2).trunc().to(torch::kInt64);  // B x K x 2 (x, y)
  const torch::Tensor rows = peaks_.select(1, 0).view({1, 1, -1}), columns = peaks_.select(1, 1).view({1, 1, -1});
  const torch::Tensor distance = torch::maximum((rows - keypoints.select(2, 1).unsqueeze(2)).abs(),
                                                (columns - keypoints.select(2, 0).unsqueeze(2)).abs());  // B x K x cells
  return std::get<1>(distance.min(2));  // the first minimum: the lower cell
}

torch::Tensor oracle_part_hits(const PeakGeometry& geometry, const torch::Tensor& parts, int64_t height, int64_t width,
                               const LocalisationSettings& settings) {
  const int64_t b = parts.size(0), k = parts.size(1);
  const torch::Tensor peaks = geometry.cell_peaks().index_select(0, geometry.nearest_cells(parts).flatten());  // B*K x 2
  const torch::Tensor repeated = parts.to(torch::kCPU).repeat_interleave(k, 0);                                // B*K x K x 3
  // Peak j of image i is part j's: keep whether it hit part j.
  return parts_near_peaks(peaks, repeated, height, width, settings).view({b, k, k}).diagonal(0, 1, 2).contiguous();
}

torch::Tensor chance_part_hits(const PeakGeometry& geometry, const torch::Tensor& parts, const torch::Tensor& indices,
                               int64_t prototypes, uint64_t seed, int64_t height, int64_t width,
                               const LocalisationSettings& settings) {
  const int64_t b = parts.size(0), k = parts.size(1);
  const torch::Tensor peaks = geometry.cell_peaks().index_select(0, random_cells(indices, geometry.cells(), prototypes, seed));
  const torch::Tensor repeated = parts.to(torch::kCPU).repeat_interleave(prototypes, 0);  // B*P x K x 3
  return parts_near_peaks(peaks, repeated, height, width, settings).view({b, prototypes, k});
}

}  // namespace protoquant::metrics
