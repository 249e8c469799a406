#include "spatial_misalignment.h"

#include "partial_state.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "protoquant/status.h"

namespace protoquant::metrics {

ParamSchema SpatialMisalignment::schema() {
  ParamSchema schema{
      ParamSpec::String("attack", "pgd", "pgd (the paper's attack) or random_start (the published code's effect)")
          .one_of({"pgd", "random_start"}),
      ParamSpec::Float("epsilon", 0.4, "L-inf budget in normalised pixel space").min(0),
      ParamSpec::Float("step", 0.01, "PGD step size").min(0),
      ParamSpec::Int("iterations", 40, "PGD iterations").range(0, 100000),
      ParamSpec::Float("quantile", 0.95, "the target's map above this quantile is protected (its box)").range(0, 1),
      ParamSpec::Int("margin", 10, "the protected box grows by this many pixels").range(0, 1 << 20),
      ParamSpec::Float("plc_quantile", 0.9, "PLC compares the regions above this quantile").range(0, 1),
      ParamSpec::String("activation", "presence", "what the attack lowers: presence (a[b,p]) or similarity (max S)")
          .one_of({"presence", "similarity"}),
      ParamSpec::Int("seed", 0, "seed of the random start").min(0),
      ParamSpec::String("dtype", "fp32",
                        "the attack's forward/backward passes: fp32, or bf16 (CPU autocast: oneDNN's bf16 kernels, "
                        "AMX where present); the measured activations are fp32 either way")
          .one_of({"fp32", "bf16"})};
  return schema.extend(prototype_classes_schema());
}

absl::Status SpatialMisalignment::begin(const EvalContext& context) {
  if (!context.forward_images) return absl::FailedPreconditionError("spatial_misalignment: the pass cannot run the model on images");
  height_ = context.image_height;
  width_ = context.image_width;
  forward_ = context.forward_images;
  classes_ = prototype_classes(context.class_weights, rule_);
  return absl::OkStatus();
}

namespace {

namespace F = torch::nn::functional;

// B x h x w maps -> B x H x W, resized as torch computes OpenCV's kernels (the maps carry no
// gradient here; localisation.h's OpenCV path is for the CPU, this one stays on the device).
torch::Tensor upsample(const torch::Tensor& maps, int64_t height, int64_t width, bool bicubic) {
  auto options = F::InterpolateFuncOptions().size(std::vector<int64_t>{height, width}).align_corners(false);
  if (bicubic) {
    options.mode(torch::kBicubic);
  } else {
    options.mode(torch::kBilinear);
  }
  return F::interpolate(maps.unsqueeze(1), options).squeeze(1);
}

// Per map, the pixels at or above its q-quantile: B x H x W bool.
torch::Tensor above_quantile(const torch::Tensor& maps, double q) {
  const torch::Tensor threshold = torch::quantile(maps.flatten(1), q, 1, /*keepdim=*/true);
  return maps.flatten(1).ge(threshold).view(maps.sizes());
}

// The tight box of each mask grown by `margin`, as a B x H x W bool mask of the box.
torch::Tensor grown_boxes(const torch::Tensor& mask, int64_t margin) {
  const int64_t b = mask.size(0), h = mask.size(1), w = mask.size(2);
  const torch::Tensor rows = mask.any(2), cols = mask.any(1);  // B x H, B x W
  const torch::Tensor ry = torch::arange(h, mask.options().dtype(torch::kInt64)).expand({b, h});
  const torch::Tensor rx = torch::arange(w, mask.options().dtype(torch::kInt64)).expand({b, w});
  const int64_t big = std::max(h, w) + 1;
  const torch::Tensor y0 = torch::where(rows, ry, big).amin(1) - margin, y1 = torch::where(rows, ry, -big).amax(1) + margin;
  const torch::Tensor x0 = torch::where(cols, rx, big).amin(1) - margin, x1 = torch::where(cols, rx, -big).amax(1) + margin;
  const torch::Tensor in_y = ry.ge(y0.unsqueeze(1)) & ry.le(y1.unsqueeze(1));
  const torch::Tensor in_x = rx.ge(x0.unsqueeze(1)) & rx.le(x1.unsqueeze(1));
  return in_y.unsqueeze(2) & in_x.unsqueeze(1);
}

// CPU autocast to bf16 for a scope, restoring what was set before.
class Bf16Autocast {
 public:
  explicit Bf16Autocast(bool on) : on_(on), was_enabled_(at::autocast::is_cpu_enabled()),
                                   was_dtype_(at::autocast::get_autocast_cpu_dtype()) {
    if (!on_) return;
    at::autocast::set_cpu_enabled(true);
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
  }
  ~Bf16Autocast() {
    if (!on_) return;
    at::autocast::clear_cache();
    at::autocast::set_cpu_enabled(was_enabled_);
    at::autocast::set_autocast_cpu_dtype(was_dtype_);
  }
  Bf16Autocast(const Bf16Autocast&) = delete;
  Bf16Autocast& operator=(const Bf16Autocast&) = delete;

 private:
  bool on_, was_enabled_;
  at::ScalarType was_dtype_;
};

}  // namespace

absl::Status SpatialMisalignment::update(const EvalBatch& batch) {
  const int64_t b = batch.images.size(0);
  const torch::Tensor arange = torch::arange(b, batch.presence.options().dtype(torch::kInt64));
  const torch::Tensor target = batch.presence.argmax(1);                                    // B
  auto activation = [&](const HeadOutput& out) {
    return attack_.activation == "presence" ? out.presence.index({arange, target})
                                            : out.similarity.index({arange, target}).flatten(1).amax(1);
  };
  HeadOutput clean;
  clean.presence = batch.presence;
  clean.similarity = batch.similarity;
  const torch::Tensor before = activation(clean).detach();
  const torch::Tensor target_map = batch.similarity.index({arange, target}).detach();  // B x h x w
  // The protected region, in input pixels; the attack may change only the rest.
  const torch::Tensor protected_box = grown_boxes(above_quantile(upsample(target_map, height_, width_, true), attack_.quantile),
                                                  attack_.margin);
  const torch::Tensor free = protected_box.logical_not().unsqueeze(1).to(batch.images.scalar_type());  // B x 1 x H x W
  // Random start: a CPU generator per image, seeded by its index (reproducible anywhere).
  const torch::Tensor where = batch.indices.to(torch::kCPU);
  std::vector<torch::Tensor> starts;
  for (int64_t i = 0; i < b; ++i) {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(attack_.seed * 1000003ULL + 17 +
                                                             static_cast<uint64_t>(where[i].item<int64_t>()));
    starts.push_back(at::empty(batch.images[i].sizes(), torch::kFloat32).uniform_(-attack_.epsilon, attack_.epsilon, generator));
  }
  const torch::Tensor images = batch.images.detach();
  torch::Tensor delta = torch::stack(starts).to(images.device()) * free;
  if (attack_.attack == "pgd") {
    Bf16Autocast autocast(attack_.dtype == "bf16" && images.is_cpu());
    for (int64_t step = 0; step < attack_.iterations; ++step) {
      torch::Tensor d = delta.clone().requires_grad_(true);
      torch::AutoGradMode grad(true);
      const torch::Tensor loss = activation(forward_(images + d)).to(torch::kFloat32).sum();
      const torch::Tensor g = torch::autograd::grad({loss}, {d})[0];
      torch::NoGradGuard no_grad;
      delta = (delta - attack_.step * g.sign() * free).clamp(-attack_.epsilon, attack_.epsilon);
    }
  }
  torch::NoGradGuard no_grad;
  const HeadOutput attacked = forward_(images + delta);
  const torch::Tensor after = activation(attacked);
  if (dump_) {
    dump_->append("target", target, "N int64 the most activated prototype");
    dump_->append("protected", protected_box.to(torch::kUInt8), "N x H x W 1 where the attack may not change pixels");
    dump_->append("map_before", target_map, "N x h x w the target's similarity map before the attack");
    dump_->append("map_after", attacked.similarity.index({arange, target}), "N x h x w ... after the attack");
    dump_->append("activation_before", before, "N the target's activation before");
    dump_->append("activation_after", after, "N ... after");
    dump_->append("delta", delta, "N x c x H x W the attack's perturbation of the normalised image");
  }
  // PAC, per image; an image whose target had no activation contributes 0.
  pac_ += (100.0 * (1.0 - after / before.clamp_min(1e-12))).masked_fill(before.le(0), 0.0).sum().item<double>();
  // PRC: prototypes of no ground-truth class ranked above the target, after minus before.
  const torch::Tensor foreign = classes_.to(batch.labels.device()).t().index_select(0, batch.labels).logical_not();  // B x P
  auto above = [&](const torch::Tensor& presence) {
    const torch::Tensor t = presence.index({arange, target}).unsqueeze(1);
    return (presence.gt(t) & foreign).sum(1).to(torch::kFloat64);
  };
  prc_ += (above(attacked.presence) - above(batch.presence)).sum().item<double>();
  // PLC: 100 x (1 - IoU) of the target's high-activation regions before and after.
  const torch::Tensor r0 = above_quantile(upsample(target_map, height_, width_, false), attack_.plc_quantile);
  const torch::Tensor r1 =
      above_quantile(upsample(attacked.similarity.index({arange, target}), height_, width_, false), attack_.plc_quantile);
  const torch::Tensor iou = (r0 & r1).flatten(1).sum(1).to(torch::kFloat64) /
                            (r0 | r1).flatten(1).sum(1).clamp_min(1).to(torch::kFloat64);
  plc_ += (100.0 * (1.0 - iou)).sum().item<double>();
  correct_before_ += batch.logits.argmax(1).eq(batch.labels).sum().item<int64_t>();
  correct_after_ += attacked.logits.argmax(1).eq(batch.labels).sum().item<int64_t>();
  images_ += b;
  return absl::OkStatus();
}

absl::Status SpatialMisalignment::merge(const Metric& other) {
  const auto* o = dynamic_cast<const SpatialMisalignment*>(&other);
  if (o == nullptr) return absl::InvalidArgumentError("spatial_misalignment: merging another metric");
  images_ += o->images_;
  pac_ += o->pac_;
  prc_ += o->prc_;
  plc_ += o->plc_;
  correct_before_ += o->correct_before_;
  correct_after_ += o->correct_after_;
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> SpatialMisalignment::compute() {
  if (images_ == 0) return absl::FailedPreconditionError("spatial_misalignment: no images were attacked");
  const auto n = static_cast<double>(images_);
  nlohmann::json settings = rule_.to_json();
  settings.update({{"attack", attack_.attack}, {"epsilon", attack_.epsilon}, {"step", attack_.step},
                   {"iterations", attack_.attack == "pgd" ? attack_.iterations : 0}, {"quantile", attack_.quantile},
                   {"margin", attack_.margin}, {"plc_quantile", attack_.plc_quantile}, {"activation", attack_.activation},
                   {"seed", attack_.seed}, {"dtype", attack_.dtype}, {"upsampling", "bicubic (protected box), bilinear (PLC)"},
                   {"space", "normalised pixels, unclamped"}, {"argmax", "first maximum (ties)"}});
  return nlohmann::json{{"values",
                         {{"pac", pac_ / n},
                          {"prc", prc_ / n},
                          {"plc", plc_ / n},
                          {"ac", 100.0 * static_cast<double>(correct_before_ - correct_after_) / n},
                          {"images", images_}}},
                        {"settings", settings}};
}

std::vector<torch::Tensor> SpatialMisalignment::partial_state() const {
  return {scalar_state({static_cast<double>(images_), pac_, prc_, plc_, static_cast<double>(correct_before_),
                        static_cast<double>(correct_after_)})};
}

absl::Status SpatialMisalignment::load_partial_state(const std::vector<torch::Tensor>& state) {
  PQ_RETURN_IF_ERROR(check_state(state, 1, "spatial_misalignment"));
  const auto v = state[0].to(torch::kFloat64).contiguous();
  if (v.numel() != 6) return absl::InvalidArgumentError("spatial_misalignment: a partial state of another shape");
  const double* x = v.data_ptr<double>();
  images_ = static_cast<int64_t>(x[0]);
  pac_ = x[1], prc_ = x[2], plc_ = x[3];
  correct_before_ = static_cast<int64_t>(x[4]);
  correct_after_ = static_cast<int64_t>(x[5]);
  return absl::OkStatus();
}

}  // namespace protoquant::metrics
