#include "purity.h"

#include "partial_state.h"

#include <algorithm>
#include <limits>
#include <map>

#include <fmt/format.h>
#include <torch/torch.h>

#include "part_hits.h"
#include "protoquant/status.h"

namespace protoquant::metrics {

ParamSchema Purity::schema() {
  ParamSchema schema{
      ParamSpec::Int("top_k", 10, "training images per prototype").range(1, 100000),
      ParamSpec::Float("weight_threshold", 1e-5, "prototypes whose largest class weight exceeds this").min(0),
      ParamSpec::Bool("merge_left_right", true, "count 'left X' as 'right X' (CUB's 15 parts become 12)"),
      ParamSpec::String("denominator", "visible",
                        "per part: hits over the top images where it is visible (visible, PIP-Net) or over all "
                        "top images (top_k, the corrected variant)")
          .one_of({"visible", "top_k"}),
      ParamSpec::Int("chance_seed", 0, "seed of the chance level's random peak cells (per image: seed * 1000003 + "
                                       "its index)")
          .min(0)};
  // PIP-Net finds the peak by max over rows, then over columns.
  ParamSchema localisation = localisation_schema();
  return schema.extend(localisation.with_default("ties", std::string("column_first")));
}

absl::Status Purity::begin(const EvalContext& context) {
  PQ_RETURN_IF_ERROR(require_parts(context, "purity"));
  height_ = context.image_height;
  width_ = context.image_width;
  PQ_RETURN_IF_ERROR(resolve_localisation(localisation_, context, "purity"));
  const auto& names = context.dataset->part_names;
  part_group_ = torch::tensor(part_groups(names, merge_, &groups_), torch::kInt64);
  selected_ = std::get<0>(context.class_weights.max(0)).gt(weight_threshold_);
  const int64_t p = context.class_weights.size(1);
  const int64_t k = static_cast<int64_t>(names.size());
  top_.values = torch::full({p, top_k_}, -std::numeric_limits<float>::infinity(), torch::kFloat32);
  top_.images = torch::full({p, top_k_}, -1, torch::kInt64);
  top_.hits = torch::zeros({p, top_k_, groups_}, torch::kBool);
  top_.visible = torch::zeros({p, top_k_, groups_}, torch::kBool);
  top_.locations = torch::zeros({p, top_k_, 2}, torch::kInt64);
  top_.keypoints = torch::zeros({p, top_k_, k, 3}, torch::kFloat32);
  return absl::OkStatus();
}

void Purity::keep_top(const Top& candidates) {
  // Candidates after the kept ones: a stable sort keeps the earlier image among equal values.
  const torch::Tensor values = torch::cat({top_.values, candidates.values}, 1);
  const torch::Tensor order =
      std::get<1>(values.sort(/*stable=*/true, /*dim=*/1, /*descending=*/true)).slice(1, 0, top_k_);
  auto pick = [&](const torch::Tensor& kept, const torch::Tensor& added) {
    const torch::Tensor all = torch::cat({kept, added}, 1);
    std::vector<int64_t> shape = {order.size(0), order.size(1)};
    for (int64_t d = 2; d < all.dim(); ++d) shape.push_back(all.size(d));
    torch::Tensor index = order;
    for (int64_t d = 2; d < all.dim(); ++d) index = index.unsqueeze(d);
    return all.gather(1, index.expand(shape));
  };
  Top next;
  next.values = pick(top_.values, candidates.values);
  next.images = pick(top_.images, candidates.images);
  next.hits = pick(top_.hits, candidates.hits);
  next.visible = pick(top_.visible, candidates.visible);
  next.locations = pick(top_.locations, candidates.locations);
  next.keypoints = pick(top_.keypoints, candidates.keypoints);
  top_ = next;
}

absl::Status Purity::update(const EvalBatch& batch) {
  const torch::Tensor s = batch.similarity.detach().to(torch::kCPU, torch::kFloat32);  // B x P x h x w
  const int64_t b = s.size(0), p = s.size(1), gh = s.size(2), gw = s.size(3);
  grid_h_ = gh, grid_w_ = gw;
  // The peak cell at feature resolution, under the tie rule (the localisation service's).
  const torch::Tensor value = std::get<0>(s.flatten(2).max(2));                       // B x P
  const torch::Tensor peaks = peak_positions(s.flatten(0, 1), localisation_.ties).view({b, p, 2});
  const torch::Tensor rows = peaks.select(2, 0).contiguous(), cols = peaks.select(2, 1).contiguous();
  const torch::Tensor parts = batch.parts.to(torch::kCPU, torch::kFloat32).contiguous();  // B x K x 3
  const int64_t k = parts.size(1);
  torch::Tensor hits = torch::zeros({b, p, groups_}, torch::kBool);
  torch::Tensor visible = torch::zeros({b, groups_}, torch::kBool);
  auto r = rows.accessor<int64_t, 2>();
  auto c = cols.accessor<int64_t, 2>();
  auto kp = parts.accessor<float, 3>();
  auto h = hits.accessor<bool, 3>();
  auto v = visible.accessor<bool, 2>();
  auto g = part_group_.accessor<int64_t, 1>();
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j < k; ++j) {
      if (kp[i][j][2] > 0.5F) v[i][g[j]] = true;
    }
    for (int64_t q = 0; q < p; ++q) {
      const PixelBox box = patch_of_cell(r[i][q], c[i][q], gh, gw, height_, width_, localisation_);
      for (int64_t j = 0; j < k; ++j) {
        if (kp[i][j][2] > 0.5F && inside(box, kp[i][j][0], kp[i][j][1])) h[i][q][g[j]] = true;
      }
    }
  }
  Top candidates;
  candidates.values = value.t().contiguous();
  candidates.images = batch.indices.to(torch::kCPU).unsqueeze(0).expand({p, b}).contiguous();
  candidates.hits = hits.transpose(0, 1).contiguous();
  candidates.visible = visible.unsqueeze(0).expand({p, b, groups_}).contiguous();
  candidates.locations = torch::stack({rows, cols}, 2).transpose(0, 1).contiguous();
  candidates.keypoints = parts.unsqueeze(0).expand({p, b, k, 3}).contiguous();
  keep_top(candidates);
  return absl::OkStatus();
}

absl::Status Purity::merge(const Metric& other) {
  const auto* o = dynamic_cast<const Purity*>(&other);
  if (o == nullptr || !o->top_.values.defined() || o->top_.values.sizes() != top_.values.sizes()) {
    return absl::InvalidArgumentError("purity: merging a metric of another shape");
  }
  keep_top(o->top_);
  return absl::OkStatus();
}

torch::Tensor Purity::best_part(const torch::Tensor& top_hits) const {
  const torch::Tensor filled = top_.images.ge(0).unsqueeze(2);                       // P x k x 1
  const torch::Tensor visible = (top_.visible & filled).to(torch::kFloat64).sum(1);   // P x G
  const torch::Tensor hits = (top_hits & filled).to(torch::kFloat64).sum(1);          // P x G
  const torch::Tensor denominator = denominator_ == "visible" ? visible : filled.to(torch::kFloat64).sum(1).expand_as(hits);
  const torch::Tensor per_part = torch::where(denominator.gt(0), hits / denominator.clamp_min(1), torch::zeros_like(hits));
  return std::get<0>(per_part.max(1));  // P
}

torch::Tensor Purity::patch_hits(const torch::Tensor& cells) const {
  const int64_t p = top_.keypoints.size(0), k = top_.keypoints.size(1), parts = top_.keypoints.size(2);
  torch::Tensor hits = torch::zeros({p, k, groups_}, torch::kBool);
  const torch::Tensor cell = cells.to(torch::kInt64).contiguous();
  auto c = cell.accessor<int64_t, 3>();
  auto kp = top_.keypoints.accessor<float, 4>();
  auto h = hits.accessor<bool, 3>();
  auto g = part_group_.accessor<int64_t, 1>();
  for (int64_t q = 0; q < p; ++q) {
    for (int64_t t = 0; t < k; ++t) {
      for (int64_t j = 0; j < parts; ++j) {
        if (kp[q][t][j][2] <= 0.5F) continue;
        const int64_t at = c[q][t][cell.size(2) == 1 ? 0 : j];
        const PixelBox box = patch_of_cell(at / grid_w_, at % grid_w_, grid_h_, grid_w_, height_, width_, localisation_);
        if (inside(box, kp[q][t][j][0], kp[q][t][j][1])) h[q][t][g[j]] = true;
      }
    }
  }
  return hits;
}

absl::StatusOr<nlohmann::json> Purity::compute() {
  if (!selected_.defined()) return absl::FailedPreconditionError("purity: computed before the evaluation pass began");
  const int64_t count = selected_.sum().item<int64_t>();
  if (count == 0) return absl::FailedPreconditionError("purity: no prototype has a class weight above the threshold");
  if (dump_) {
    dump_->set("top_images", top_.images, "P x k training image indices, highest max-similarity first (-1: none)");
    dump_->set("top_values", top_.values, "P x k their maxima of the (unclamped) similarity map");
    dump_->set("top_locations", top_.locations, "P x k x 2 (row, column) of the peak cell, feature resolution");
    dump_->set("top_keypoints", top_.keypoints, "P x k x K x 3 those images' keypoints (x, y, visible), input pixels");
    dump_->set("part_group", part_group_, "K the merged part each keypoint counts for (left into right)");
    dump_->set("selected", selected_, "P prototypes evaluated (largest class weight above weight_threshold)");
  }
  const torch::Tensor all = best_part(top_.hits);          // P
  const torch::Tensor purity = all.masked_select(selected_);  // count
  // The chance and oracle levels, on the same top images and patches.
  double chance = 0, oracle = 0;
  if (grid_h_ > 0) {
    const int64_t p = top_.images.size(0), k = top_.images.size(1);
    // Chance: image i's P prototypes peak at the P cells drawn for it (random_cells); prototype q
    // at a top image takes that image's q-th cell. Empty slots (-1) draw nothing that is counted.
    const torch::Tensor images = top_.images.clamp_min(0).flatten();                                   // P*k
    const torch::Tensor cells = random_cells(images, grid_h_ * grid_w_, p, chance_seed_).view({p * k, p});
    const torch::Tensor prototype = torch::arange(p, torch::kInt64).repeat_interleave(k);               // P*k
    const torch::Tensor random = cells.gather(1, prototype.unsqueeze(1)).view({p, k, 1});
    // Oracle: each part's own keypoint cell, floor(y h / H), floor(x w / W).
    const torch::Tensor xy = top_.keypoints.narrow(3, 0, 2);
    const torch::Tensor row = (xy.select(3, 1) * grid_h_ / height_).floor().clamp(0, grid_h_ - 1).to(torch::kInt64);
    const torch::Tensor column = (xy.select(3, 0) * grid_w_ / width_).floor().clamp(0, grid_w_ - 1).to(torch::kInt64);
    chance = best_part(patch_hits(random)).masked_select(selected_).mean().item<double>();
    oracle = best_part(patch_hits(row * grid_w_ + column)).masked_select(selected_).mean().item<double>();
  }
  // Per prototype, for the gallery: null where the prototype was not evaluated.
  nlohmann::json per_prototype = nlohmann::json::array();
  const torch::Tensor all_cpu = all.cpu(), selected_cpu = selected_.cpu();
  const auto all_a = all_cpu.accessor<double, 1>();
  const auto selected_a = selected_cpu.accessor<bool, 1>();
  for (int64_t q = 0; q < all.size(0); ++q) {
    per_prototype.push_back(selected_a[q] ? nlohmann::json(all_a[q]) : nlohmann::json());
  }
  nlohmann::json settings = localisation_.to_json();
  settings.update({{"top_k", top_k_}, {"weight_threshold", weight_threshold_}, {"merge_left_right", merge_},
                   {"merged_parts", groups_}, {"map", "similarity, unclamped"}, {"denominator", denominator_},
                   {"chance_seed", chance_seed_},
                   {"chance", "the same top images, each peaking at a random cell (seeded per image)"},
                   {"oracle", "the same top images, each part's peak at the cell holding its keypoint"}});
  return nlohmann::json{{"values",
                         {{"purity", purity.mean().item<double>()},
                          {"purity_std", count > 1 ? purity.std().item<double>() : 0.0},
                          {"pure_prototypes", purity.gt(0.5).sum().item<int64_t>()},
                          {"evaluated_prototypes", count},
                          {"purity_chance", chance},
                          {"purity_oracle", oracle}}},
                        {"settings", settings},
                        {"per_prototype", {{"purity", per_prototype}}}};
}

std::vector<torch::Tensor> Purity::partial_state() const {
  return {top_.values, top_.images, top_.hits, top_.visible, top_.locations, top_.keypoints};
}

absl::Status Purity::load_partial_state(const std::vector<torch::Tensor>& state) {
  PQ_RETURN_IF_ERROR(check_state(state, 6, "purity"));
  top_ = Top{state[0].clone(), state[1].clone(), state[2].clone(), state[3].clone(), state[4].clone(), state[5].clone()};
  return absl::OkStatus();
}

}  // namespace protoquant::metrics
