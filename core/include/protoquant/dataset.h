// A dataset provides labelled images by split. Batches are tensors, so an in-memory dataset
// (IDX) serves a batch with one index_select and a decoded-image dataset uses a loader.
#pragma once

#include <cstdint>
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
};

struct Batch {
  torch::Tensor images;  // B x C x H x W float, normalised
  torch::Tensor labels;  // B int64
  torch::Tensor targets;  // B x C soft targets (set by Mixup/CutMix in training); may be undefined
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual const DatasetInfo& info() const = 0;
  virtual int64_t size(const std::string& split) const = 0;
  // indices: 1-D int64 tensor of sample indices within the split.
  virtual absl::StatusOr<Batch> get_batch(const std::string& split, const torch::Tensor& indices) = 0;
  // A string that changes when the data changes (files, sizes, transform): feature cache keys.
  virtual std::string identity() const = 0;
};

}  // namespace protoquant
