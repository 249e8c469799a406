#include "part_importance.h"

#include <torch/torch.h>

namespace protoquant::metrics {

torch::Tensor prototype_part_importance(const torch::Tensor& similarity, const torch::Tensor& presence,
                                        const torch::Tensor& class_weights, const torch::Tensor& columns,
                                        int64_t num_columns, const LocalisationSettings& localisation,
                                        ImportanceAssignment assignment) {
  const torch::Tensor maps = similarity.detach().to(torch::kCPU, torch::kFloat32);
  const int64_t b = maps.size(0), p = maps.size(1);
  const int64_t height = columns.size(1), width = columns.size(2);
  const torch::Tensor cols = columns.to(torch::kCPU, torch::kInt64).contiguous();
  // B x P x columns: where each prototype's contribution goes, a distribution over columns.
  torch::Tensor share = torch::zeros({b, p, num_columns}, torch::kFloat32);
  for (int64_t i = 0; i < b; ++i) {
    const torch::Tensor image_columns = cols[i].flatten();  // H*W
    if (assignment == ImportanceAssignment::kPeak) {
      const torch::Tensor peaks = localise_peaks(maps[i], height, width, localisation);  // P x 2
      const torch::Tensor at = image_columns.index_select(0, peaks.select(1, 0) * width + peaks.select(1, 1));
      share[i].scatter_(1, at.unsqueeze(1), 1.0F);
    } else {
      const torch::Tensor mass = upsample_maps(maps[i], height, width, localisation.upsampling).clamp_min(0).flatten(1);
      const torch::Tensor total = mass.sum(1, true);
      // A map with no mass anywhere points nowhere in particular: the background.
      const torch::Tensor normalised = torch::where(total > 0, mass / total.clamp_min(1e-30), torch::zeros_like(mass));
      share[i].scatter_add_(1, image_columns.unsqueeze(0).expand({p, height * width}), normalised);
      share[i].select(1, 0).add_(total.squeeze(1).le(0).to(torch::kFloat32));
    }
  }
  const torch::Tensor contribution = presence.detach().to(torch::kCPU, torch::kFloat32).unsqueeze(1) *
                                     class_weights.detach().to(torch::kCPU, torch::kFloat32).unsqueeze(0);  // B x C x P
  return torch::bmm(contribution, share);  // B x C x columns
}

}  // namespace protoquant::metrics
