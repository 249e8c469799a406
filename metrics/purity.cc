#include "purity.h"

#include <algorithm>
#include <limits>
#include <map>

#include <fmt/format.h>
#include <torch/torch.h>

#include "protoquant/evaluation_pass.h"
#include "protoquant/status.h"

namespace protoquant::metrics {

ParamSchema Purity::schema() {
  ParamSchema schema{
      ParamSpec::Int("top_k", 10, "training images per prototype").range(1, 100000),
      ParamSpec::Float("weight_threshold", 1e-5, "prototypes whose largest class weight exceeds this").min(0),
      ParamSpec::Bool("merge_left_right", true, "count 'left X' as 'right X' (CUB's 15 parts become 12)")};
  // PIP-Net finds the peak by max over rows, then over columns.
  ParamSchema localisation = localisation_schema();
  return schema.extend(localisation.with_default("ties", std::string("column_first")));
}

absl::Status Purity::begin(const EvalContext& context) {
  PQ_RETURN_IF_ERROR(require_parts(context, "purity"));
  height_ = context.image_height;
  width_ = context.image_width;
  const auto& names = context.dataset->part_names;
  // Merged parts: "left X" joins "right X" when both exist; every other part is its own group.
  std::map<std::string, int64_t> group_of;
  std::vector<int64_t> group(names.size());
  for (size_t k = 0; k < names.size(); ++k) {
    std::string name = names[k];
    if (merge_ && name.rfind("left ", 0) == 0) {
      const std::string right = "right " + name.substr(5);
      if (std::find(names.begin(), names.end(), right) != names.end()) name = right;
    }
    auto [it, added] = group_of.emplace(name, static_cast<int64_t>(group_of.size()));
    group[k] = it->second;
  }
  groups_ = static_cast<int64_t>(group_of.size());
  part_group_ = torch::tensor(group, torch::kInt64);
  selected_ = std::get<0>(context.class_weights.max(0)).gt(weight_threshold_);
  const int64_t p = context.class_weights.size(1);
  values_ = torch::full({p, top_k_}, -std::numeric_limits<float>::infinity(), torch::kFloat32);
  images_ = torch::full({p, top_k_}, -1, torch::kInt64);
  hits_ = torch::zeros({p, top_k_, groups_}, torch::kBool);
  visible_ = torch::zeros({p, top_k_, groups_}, torch::kBool);
  return absl::OkStatus();
}

void Purity::keep_top(torch::Tensor values, torch::Tensor images, torch::Tensor hits, torch::Tensor visible) {
  // Candidates after the kept ones: a stable sort keeps the earlier image among equal values.
  values = torch::cat({values_, values}, 1);
  images = torch::cat({images_, images}, 1);
  hits = torch::cat({hits_, hits}, 1);
  visible = torch::cat({visible_, visible}, 1);
  const torch::Tensor order =
      std::get<1>(values.sort(/*stable=*/true, /*dim=*/1, /*descending=*/true)).slice(1, 0, top_k_);
  values_ = values.gather(1, order);
  images_ = images.gather(1, order);
  const torch::Tensor order3 = order.unsqueeze(2).expand({-1, -1, groups_});
  hits_ = hits.gather(1, order3);
  visible_ = visible.gather(1, order3);
}

absl::Status Purity::update(const EvalBatch& batch) {
  const torch::Tensor s = batch.similarity.detach().to(torch::kCPU, torch::kFloat32);  // B x P x h x w
  const int64_t b = s.size(0), p = s.size(1), gh = s.size(2), gw = s.size(3);
  // The peak cell under the tie rule: flatten in its scan order, the first maximum wins.
  const bool by_column = localisation_.ties == PeakTies::kColumnFirst;
  const torch::Tensor scan = (by_column ? s.transpose(2, 3) : s).reshape({b, p, gh * gw});
  const torch::Tensor value = std::get<0>(scan.max(2));
  const torch::Tensor first = scan.eq(value.unsqueeze(2)).to(torch::kInt8).argmax(2);  // first maximum
  const torch::Tensor rows = by_column ? first.remainder(gh) : torch::div(first, gw, "floor");
  const torch::Tensor cols = by_column ? torch::div(first, gh, "floor") : first.remainder(gw);
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
      const PixelBox box = purity_patch(r[i][q], c[i][q], gh, gw, height_, width_, localisation_.patch_size);
      for (int64_t j = 0; j < k; ++j) {
        if (kp[i][j][2] > 0.5F && inside(box, kp[i][j][0], kp[i][j][1])) h[i][q][g[j]] = true;
      }
    }
  }
  keep_top(value.t().contiguous(), batch.indices.to(torch::kCPU).unsqueeze(0).expand({p, b}).contiguous(),
           hits.transpose(0, 1).contiguous(), visible.unsqueeze(0).expand({p, b, groups_}).contiguous());
  return absl::OkStatus();
}

absl::Status Purity::merge(const Metric& other) {
  const auto* o = dynamic_cast<const Purity*>(&other);
  if (o == nullptr || !o->values_.defined() || o->values_.sizes() != values_.sizes()) {
    return absl::InvalidArgumentError("purity: merging a metric of another shape");
  }
  keep_top(o->values_, o->images_, o->hits_, o->visible_);
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> Purity::compute() {
  const int64_t count = selected_.sum().item<int64_t>();
  if (count == 0) return absl::FailedPreconditionError("purity: no prototype has a class weight above the threshold");
  const torch::Tensor filled = images_.ge(0).unsqueeze(2);                            // P x k x 1
  const torch::Tensor visible = (visible_ & filled).to(torch::kFloat64).sum(1);        // P x G
  const torch::Tensor hits = (hits_ & filled).to(torch::kFloat64).sum(1);              // P x G
  const torch::Tensor per_part = torch::where(visible.gt(0), hits / visible.clamp_min(1), torch::zeros_like(hits));
  const torch::Tensor purity = std::get<0>(per_part.max(1)).masked_select(selected_);  // count
  nlohmann::json settings = localisation_.to_json();
  settings.update({{"top_k", top_k_}, {"weight_threshold", weight_threshold_}, {"merge_left_right", merge_},
                   {"merged_parts", groups_}, {"map", "similarity, unclamped"}, {"denominator", "visible"}});
  return nlohmann::json{{"values",
                         {{"purity", purity.mean().item<double>()},
                          {"purity_std", count > 1 ? purity.std().item<double>() : 0.0},
                          {"pure_prototypes", purity.gt(0.5).sum().item<int64_t>()},
                          {"evaluated_prototypes", count}}},
                        {"settings", settings}};
}

}  // namespace protoquant::metrics
