// `protoquant data MANIFEST` and `protoquant bench loader`: what a dataset holds, and how fast
// its images decode. Both reach the image code only through the registry (the datasets plugin).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <absl/status/status.h>

#include "protoquant/experiment_spec.h"
#include "protoquant/registry.h"

namespace protoquant {

// The manifest's dataset, built as a run builds it (its seed, its folder for relative paths).
absl::StatusOr<std::shared_ptr<Dataset>> open_dataset(const ExperimentSpec& spec, Registry& registry);

// Prints samples per split, classes, image size, annotations (parts, boxes) and every sample
// skipped as bad, by file and reason.
absl::Status print_data_summary(const ExperimentSpec& spec, Dataset& dataset);

struct LoaderBenchOptions {
  std::string root;     // every .jpg/.jpeg/.png under it
  int64_t threads = 0;  // 0: one per hardware thread
  int64_t batch_size = 64;
  int64_t size = 224;
  int64_t repeat = 2;   // passes over the images; the fastest is reported
};

// Decodes every image under root with the training transform (random resized crop to `size`,
// horizontal flip, ImageNet normalisation) through image_folder's loader and prints
// `images_per_s`.
absl::Status bench_loader(Registry& registry, const LoaderBenchOptions& options);

}  // namespace protoquant
