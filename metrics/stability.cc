#include "stability.h"

#include "partial_state.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "part_hits.h"
#include "protoquant/status.h"

namespace protoquant::metrics {

ParamSchema Stability::schema() {
  ParamSchema schema{
      ParamSpec::Float("noise_std", 0.2, "standard deviation of the noise on the normalised image").min(0),
      ParamSpec::Float("noise_clip", 0.25, "the noise is clipped to +-noise_clip; 0 = unclipped (first release)").min(0),
      ParamSpec::Int("seed", 0, "the noise's seed (the reference's noise is unseeded)").min(0),
      ParamSpec::String("compare", "elementwise", "stable when the part vector is unchanged (elementwise) or its sum (sum)")
          .one_of({"elementwise", "sum"}),
      ParamSpec::Int("chance_seed", 0, "seed of the chance level's random peaks (per image: seed * 1000003 + its index, "
                                       "the noisy image's from seed + 1)")
          .min(0)};
  return schema.extend(localisation_schema()).extend(prototype_classes_schema());
}

torch::Tensor stability_noise(const NoiseSettings& noise, const torch::Tensor& images, const torch::Tensor& indices) {
  // A CPU generator per sample, seeded by the metric's seed and the sample's index: the same
  // realisation whatever the device, the batch size, the batch order or the process evaluating it.
  const torch::Tensor where = indices.to(torch::kCPU);
  std::vector<torch::Tensor> per_sample;
  for (int64_t i = 0; i < images.size(0); ++i) {
    auto generator =
        at::make_generator<at::CPUGeneratorImpl>(noise.seed * 1000003ULL + static_cast<uint64_t>(where[i].item<int64_t>()));
    per_sample.push_back(at::normal(0.0, noise.std, images[i].sizes(), generator, torch::TensorOptions(torch::kFloat32)));
  }
  torch::Tensor n = torch::stack(per_sample);
  if (noise.clip > 0) n = n.clamp(-noise.clip, noise.clip);
  return n.to(images.device());
}

absl::Status Stability::begin(const EvalContext& context) {
  PQ_RETURN_IF_ERROR(require_parts(context, "stability"));
  if (!context.forward_images) return absl::FailedPreconditionError("stability: the pass cannot run the model on images");
  height_ = context.image_height;
  width_ = context.image_width;
  PQ_RETURN_IF_ERROR(resolve_localisation(localisation_, context, "stability"));
  forward_ = context.forward_images;
  classes_ = prototype_classes(context.class_weights, rule_);
  stable_ = torch::zeros({classes_.size(0)}, torch::kInt64);
  pairs_ = torch::zeros_like(stable_);
  stable_chance_ = torch::zeros_like(stable_);
  return absl::OkStatus();
}

absl::Status Stability::update(const EvalBatch& batch) {
  const PartHits clean = part_hits(batch.similarity, batch.parts, batch.labels, classes_, height_, width_, localisation_);
  torch::Tensor noisy_similarity;
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor noise = stability_noise(noise_, batch.images, batch.indices);
    noisy_similarity = forward_(batch.images + noise).similarity;
    if (dump_) {
      dump_->append("noise", noise, "N x c x H x W the noise added to each normalised image");
      dump_->append("noisy_similarity", noisy_similarity, "N x P x h x w the similarity maps under that noise");
    }
  }
  const PartHits noisy = part_hits(noisy_similarity, batch.parts, batch.labels, classes_, height_, width_, localisation_);
  const auto same = [&](const torch::Tensor& a, const torch::Tensor& b) {  // B x P x K -> B x P
    return compare_ == "sum" ? a.sum(2).eq(b.sum(2)) : a.eq(b).all(2);
  };
  stable_ += (same(clean.hits, noisy.hits) & clean.evaluated).to(torch::kInt64).sum(0);
  pairs_ += clean.evaluated.to(torch::kInt64).sum(0);

  // Chance: a model whose maps peak at random cells, drawn afresh for the noisy image. (The
  // oracle, peaks on the keypoints, is 100 by construction: noise does not move keypoints.)
  const int64_t prototypes = classes_.size(0);
  if (!geometry_ || !geometry_->fits(batch.similarity.size(2), batch.similarity.size(3))) {
    geometry_.emplace(batch.similarity.size(2), batch.similarity.size(3), height_, width_, localisation_);
  }
  const torch::Tensor chance_clean =
      chance_part_hits(*geometry_, batch.parts, batch.indices, prototypes, chance_seed_, height_, width_, localisation_);
  const torch::Tensor chance_noisy = chance_part_hits(*geometry_, batch.parts, batch.indices, prototypes,
                                                      chance_seed_ + 1, height_, width_, localisation_);
  const torch::Tensor evaluated = clean.evaluated.to(chance_clean.device());
  stable_chance_ += (same(chance_clean, chance_noisy) & evaluated).to(torch::kInt64).sum(0).to(stable_chance_.device());
  return absl::OkStatus();
}

absl::Status Stability::merge(const Metric& other) {
  const auto* o = dynamic_cast<const Stability*>(&other);
  if (o == nullptr || !o->stable_.defined() || o->stable_.sizes() != stable_.sizes()) {
    return absl::InvalidArgumentError("stability: merging a metric of another shape");
  }
  stable_ += o->stable_;
  pairs_ += o->pairs_;
  stable_chance_ += o->stable_chance_;
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> Stability::compute() {
  if (!pairs_.defined()) return absl::FailedPreconditionError("stability: computed before the evaluation pass began");
  const torch::Tensor evaluated = pairs_.gt(0);
  const int64_t count = evaluated.sum().item<int64_t>();
  if (count == 0) return absl::FailedPreconditionError("stability: no prototype was evaluated on any image");
  const auto level = [&](const torch::Tensor& stable) {
    const torch::Tensor per_prototype = stable.to(torch::kFloat64) / pairs_.clamp_min(1).to(torch::kFloat64);
    return 100.0 * per_prototype.masked_select(evaluated).mean().item<double>();
  };
  nlohmann::json settings = localisation_.to_json();
  settings.update(rule_.to_json());
  settings.update({{"noise_std", noise_.std}, {"noise_clip", noise_.clip}, {"seed", noise_.seed}, {"compare", compare_},
                   {"noise", "normal(0, noise_std) per element, clipped, on the normalised image; a CPU generator per "
                             "image seeded with seed * 1000003 + its index in the split"},
                   {"map", "similarity"},
                   {"chance_seed", chance_seed_},
                   {"chance", "each map peaks at one random cell, drawn again for the noisy image (seeded per image)"},
                   {"oracle", "each map peaks on a keypoint, which noise does not move: 100 by construction"}});
  return nlohmann::json{{"values",
                         {{"stability", level(stable_)},
                          {"evaluated_prototypes", count},
                          {"stability_chance", level(stable_chance_)},
                          {"stability_oracle", 100.0}}},
                        {"settings", settings}};
}

std::vector<torch::Tensor> Stability::partial_state() const { return {stable_, pairs_, stable_chance_}; }

absl::Status Stability::load_partial_state(const std::vector<torch::Tensor>& state) {
  PQ_RETURN_IF_ERROR(check_state(state, 3, "stability"));
  stable_ = state[0].clone();
  pairs_ = state[1].clone();
  stable_chance_ = state[2].clone();
  return absl::OkStatus();
}

}  // namespace protoquant::metrics
