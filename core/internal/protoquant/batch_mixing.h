// Batch-level Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019), timm-style: per batch, with
// probability `mix_probability`, either blend the whole batch with its reversal (Mixup) or paste a
// box of the reversed batch (CutMix), and mix the one-hot targets by the same proportion. Works on
// any B x C x H x W input: images in stage 0, cached feature maps in stages 1 and 3.
#pragma once

#include <ATen/core/Generator.h>

#include "protoquant/dataset.h"
#include "protoquant/trainer.h"

namespace protoquant {

// Whether the settings ask for any mixing.
inline bool mixing_enabled(const TrainSettings& s) {
  return (s.mixup > 0.0 || s.cutmix > 0.0) && s.mix_probability > 0.0;
}

// Mixes `batch` in place of its images and sets batch.targets (B x num_classes). Deterministic
// for a given generator state.
void mix_batch(Batch& batch, int64_t num_classes, const TrainSettings& settings, at::Generator& generator);

}  // namespace protoquant
