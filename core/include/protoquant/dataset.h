// A dataset provides labelled images by split. Batches are tensors, so an in-memory dataset
// (IDX) serves a batch with one index_select and a decoded-image dataset uses a loader.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <torch/types.h>

namespace protoquant {

struct DatasetInfo {
  std::string name;
  int64_t num_classes = 0;
  std::vector<std::string> class_names;
  int64_t channels = 0;  // of the images a batch holds (after the dataset's transform)
  int64_t height = 0;
  int64_t width = 0;
  std::vector<std::string> splits;  // e.g. {"train", "test"}
  bool has_parts = false;
  bool has_boxes = false;
  std::vector<std::string> part_names;  // P names when has_parts (Batch.parts is B x P x 3)
  // FunnyBirds' interventions (Dataset::get_intervened_batch): the dataset can re-render any of
  // its samples with some parts, or one background object, not drawn, and say what each pixel
  // shows. class_parts then lists the parts (indices into part_names) that make up each class.
  bool has_interventions = false;
  std::vector<std::vector<int64_t>> class_parts;
  // Samples left out when the dataset was opened (on_bad_sample = "skip"), so a summary can say
  // exactly what is missing instead of the dataset silently shrinking.
  struct Skipped {
    std::string split;
    std::string file;
    std::string reason;
  };
  std::vector<Skipped> skipped;
  // How a batch's images are normalised, per channel (RGB, or one grey channel): a pixel in
  // [0, 1] is image * std + mean. For drawing what the model sees (previews, explanations).
  std::vector<double> mean, std;
};

// What a re-rendered sample leaves out (FunnyBirds' part and background interventions).
struct Intervention {
  std::vector<int64_t> removed_parts;  // indices into DatasetInfo::part_names, not drawn
  int64_t removed_object = -1;         // a background object not drawn (-1: none)
};

struct Batch {
  torch::Tensor images;  // B x C x H x W float, normalised
  torch::Tensor labels;  // B int64
  torch::Tensor targets;  // B x C soft targets (set by Mixup/CutMix in training); may be undefined
  // Optional annotations, undefined when the dataset has none. Coordinates are in pixels of
  // `images` (after every transform), pixel centres at integer coordinates.
  torch::Tensor parts;  // B x P x 3 float: (x, y, visible in {0, 1})
  torch::Tensor boxes;  // B x 4 float: object box (x0, y0, x1, y1)
  // What each pixel of `images` shows (get_intervened_batch only): B x H x W int64, 0 the
  // background, p + 1 part p, -(k + 1) background object k.
  torch::Tensor part_maps;
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual const DatasetInfo& info() const = 0;
  virtual int64_t size(const std::string& split) const = 0;
  // indices: 1-D int64 tensor of sample indices within the split.
  // The "train" split gets the dataset's training transform (augmentation), others its eval one.
  virtual absl::StatusOr<Batch> get_batch(const std::string& split, const torch::Tensor& indices) = 0;
  // The same samples with the un-augmented eval transform, whatever the split (feature
  // extraction, explanations). Datasets without augmentation need not override it.
  virtual absl::StatusOr<Batch> get_eval_batch(const std::string& split, const torch::Tensor& indices) {
    return get_batch(split, indices);
  }
  // A hint that get_batch / get_eval_batch (augment = false) with these indices comes next, so a
  // decoding dataset can prepare it in the background. Ignoring it is always correct.
  virtual void prefetch(const std::string& /*split*/, const torch::Tensor& /*indices*/, bool /*augment*/) {}
  // Any image file through the eval transform, as the model would see it: a batch of one with
  // label -1 and no annotations (`protoquant explain --image`). Datasets that hold no images of
  // their own format need not override it.
  virtual absl::StatusOr<Batch> load_image(const std::filesystem::path& file) {
    return absl::UnimplementedError(file.string() + ": dataset '" + info().name + "' cannot read image files");
  }
  // Where info().has_interventions: the samples re-rendered through the eval transform, sample
  // indices[i] without interventions[i]'s parts and object (one intervention: the same for all),
  // with their part maps; the same placement and content otherwise, so an image differs from the
  // original only where the removed things showed.
  virtual absl::StatusOr<Batch> get_intervened_batch(const std::string& /*split*/, const torch::Tensor& /*indices*/,
                                                     const std::vector<Intervention>& /*interventions*/) {
    return absl::UnimplementedError("dataset '" + info().name +
                                    "' cannot re-render its samples with parts or background objects removed");
  }
  // A string that changes when the data changes (files, sizes, transform): feature cache keys.
  virtual std::string identity() const = 0;
};

}  // namespace protoquant
