#include "free_prototypes.h"

#include <fmt/format.h>

namespace protoquant::heads {

FreePrototypesHead::FreePrototypesHead(int64_t channels, int64_t classes, const FreePrototypesOptions& options)
    : options_(options) {
  // N(0, 1) directions, as PIP-Net's 1x1 add-on convolution starts; only directions matter.
  prototypes_ = register_parameter("prototypes", torch::randn({options.prototypes, channels}));
  weight_ = register_parameter("weight", torch::randn({classes, options.prototypes}) * options.weight_std +
                                             options.weight_mean);
}

HeadOutput FreePrototypesHead::forward(const torch::Tensor& stored) {
  const torch::Tensor features = stored.to(torch::kFloat32);
  TORCH_CHECK(features.dim() == 4 && features.size(1) == prototypes_.size(1),
              fmt::format("free_prototypes expects B x {} x H x W features", prototypes_.size(1)));
  const int64_t b = features.size(0), h = features.size(2), w = features.size(3), p = prototypes_.size(0);
  const torch::Tensor z = features.permute({0, 2, 3, 1}).reshape({-1, features.size(1)});
  const torch::Tensor zn = z / z.norm(2, 1, true).clamp_min(options_.eps);
  const torch::Tensor en = prototypes_ / prototypes_.norm(2, 1, true).clamp_min(options_.eps);
  const torch::Tensor s = zn.matmul(en.t());  // (B*H*W) x P
  const torch::Tensor soft = torch::softmax(s / options_.temperature, 1);
  HeadOutput out;
  out.presence = soft.view({b, h * w, p}).amax(1);
  out.logits = out.presence.matmul(torch::relu(weight_).t());
  if (is_training() && options_.pipnet_logits) out.logits = torch::log1p(out.logits.pow(2));
  if (!is_training()) out.similarity = s.view({b, h, w, p}).permute({0, 3, 1, 2}).contiguous();
  return out;
}

torch::Tensor FreePrototypesHead::regularization() {
  if (options_.sparsity <= 0.0) return {};
  return options_.sparsity * torch::relu(weight_).sum();
}

absl::Status FreePrototypesHead::set_class_weights(const torch::Tensor& weights) {
  if (!weights.defined() || !weights.sizes().equals(weight_.sizes()) || !torch::isfinite(weights).all().item<bool>() ||
      weights.lt(0).any().item<bool>()) {
    return absl::InvalidArgumentError(
        fmt::format("class weights must be finite, non-negative and {}", fmt::join(weight_.sizes(), " x ")));
  }
  torch::NoGradGuard no_grad;
  weight_.copy_(weights);
  return absl::OkStatus();
}

absl::Status FreePrototypesHead::hold_class_weights(const torch::Tensor& mask) { return hold_outside_mask(weight_, mask); }

}  // namespace protoquant::heads
