#include "protoquant/batch_mixing.h"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

namespace protoquant {
namespace {

double uniform(at::Generator& generator) {
  return torch::rand({1}, generator, torch::kFloat64).item<double>();
}

// Beta(alpha, alpha) as G1 / (G1 + G2) with G ~ Gamma(alpha).
double beta(double alpha, at::Generator& generator) {
  const auto g = at::_standard_gamma(torch::full({2}, alpha, torch::kFloat64), generator);
  const double a = g[0].item<double>(), b = g[1].item<double>();
  return a + b > 0 ? a / (a + b) : 0.5;
}

}  // namespace

void mix_batch(Batch& batch, int64_t num_classes, const TrainSettings& s, at::Generator& generator) {
  TORCH_CHECK(num_classes > 0, "Mixup/CutMix need the number of classes");
  const auto one_hot = torch::one_hot(batch.labels, num_classes).to(torch::kFloat32);
  // Draws happen in a fixed order whatever the outcome, so the generator stays in step.
  const bool mix = uniform(generator) < s.mix_probability;
  const bool use_cutmix = s.cutmix > 0.0 && (s.mixup <= 0.0 || uniform(generator) < s.mix_switch);
  const double lambda = beta(use_cutmix ? s.cutmix : s.mixup, generator);
  const double cy = uniform(generator), cx = uniform(generator);
  if (!mix || batch.images.size(0) < 2) {
    batch.targets = one_hot.to(batch.images.device());
    return;
  }
  const auto partner = batch.images.flip(0);
  double kept = lambda;  // share of the original sample in the result
  if (use_cutmix) {
    TORCH_CHECK(batch.images.dim() == 4, "CutMix needs B x C x H x W inputs");
    const int64_t h = batch.images.size(2), w = batch.images.size(3);
    const double cut = std::sqrt(1.0 - lambda);
    const auto ch = static_cast<int64_t>(std::llround(h * cut)), cw = static_cast<int64_t>(std::llround(w * cut));
    const auto y0 = std::clamp<int64_t>(static_cast<int64_t>(cy * h) - ch / 2, 0, h);
    const auto x0 = std::clamp<int64_t>(static_cast<int64_t>(cx * w) - cw / 2, 0, w);
    const int64_t y1 = std::min(h, y0 + ch), x1 = std::min(w, x0 + cw);
    auto images = batch.images.clone();
    images.slice(2, y0, y1).slice(3, x0, x1).copy_(partner.slice(2, y0, y1).slice(3, x0, x1));
    batch.images = images;
    // The box was clipped at the border: the targets follow the pixels actually pasted.
    kept = 1.0 - static_cast<double>((y1 - y0) * (x1 - x0)) / static_cast<double>(h * w);
  } else {
    batch.images = batch.images * lambda + partner * (1.0 - lambda);
  }
  batch.targets = (one_hot * kept + one_hot.flip(0) * (1.0 - kept)).to(batch.images.device());
}

}  // namespace protoquant
