// An evaluation metric, streaming (torchmetrics' and ProtoPNeXt's habit): one evaluation pass
// hands every metric the same batches through update(); compute() turns the accumulated state
// into values; merge() adds another instance's partial state, so shards of a split (processes of
// a data-parallel evaluation, or threads) reduce to the numbers of the whole split.
//
// A metric declares what it reads (MetricNeeds) and the pass computes only the union: logits
// alone cost one head pass over stored features; similarity maps, part keypoints, input images
// and the training split are added only when some metric asks for them.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <absl/status/status.h>
#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "protoquant/backbone.h"
#include "protoquant/dataset.h"
#include "protoquant/eval_dump.h"
#include "protoquant/head.h"
#include "protoquant/model.h"

namespace protoquant {

struct MetricNeeds {
  bool similarity = false;   // S and presence from the head (logits always come)
  bool parts = false;        // part keypoints and boxes; a dataset without parts is an error
  bool images = false;       // the normalised input images (perturbations, attacks)
  bool eval_split = true;    // batches of the evaluated split
  bool train_split = false;  // batches of the training split too (purity, grounding)
  bool quantizer = false;    // the quantizer's code assignments (Evalbatch.codes)
};

// One batch of a split, with what the pass's metrics declared. Tensors a metric did not ask for
// may be undefined. Everything is on the evaluation device, in fp32.
struct EvalBatch {
  std::string split;
  torch::Tensor indices;          // B int64, sample indices within the split
  torch::Tensor labels;           // B int64
  torch::Tensor features;         // B x D x h x w, the frozen backbone's map of the eval transform
  torch::Tensor logits;           // B x C, the interpretable model
  torch::Tensor blackbox_logits;  // B x C, g on the features
  torch::Tensor presence;         // B x P (needs.similarity)
  torch::Tensor similarity;       // B x P x h x w (needs.similarity)
  torch::Tensor images;           // B x c x H x W normalised (needs.images)
  torch::Tensor parts;            // B x K x 3 (x, y, visible) in input pixels (needs.parts)
  torch::Tensor boxes;            // B x 4 (needs.parts, when the dataset has boxes)
  torch::Tensor codes;            // B x h x w x codebooks int64 (needs.quantizer)
};

// What stays the same over a pass.
struct EvalContext {
  std::string split;        // the evaluated split, e.g. "test"
  std::string train_split;  // the training split (purity, grounding)
  int64_t split_size = 0;
  int64_t train_size = 0;
  Model* model = nullptr;
  const DatasetInfo* dataset = nullptr;
  torch::Tensor class_weights;  // C x P, non-negative, on the CPU
  BackboneGeometry geometry;
  int64_t image_height = 0, image_width = 0;      // of the images a batch holds
  int64_t feature_height = 0, feature_width = 0;  // of the feature map
  torch::Device device = torch::kCPU;
  // The head's output for (perturbed) images: backbone features then head, in eval mode. With
  // grad mode on, gradients flow to the images (the misalignment attack).
  std::function<HeadOutput(const torch::Tensor& images)> forward_images;
  // Where the dataset can re-render its samples (DatasetInfo::has_interventions): samples of the
  // evaluated split through Dataset::get_intervened_batch; empty otherwise.
  std::function<absl::StatusOr<Batch>(const torch::Tensor& indices, const std::vector<Intervention>& interventions)>
      intervene;
};

class Metric {
 public:
  virtual ~Metric() = default;
  virtual MetricNeeds needs() const = 0;
  // Once before the first update: check the context (a metric that needs parts on a dataset
  // without them says so here) and size the state.
  virtual absl::Status begin(const EvalContext& /*context*/) { return absl::OkStatus(); }
  virtual absl::Status update(const EvalBatch& batch) = 0;
  // Adds the partial state of `other`, a metric of the same type and settings that saw other
  // batches of the same pass.
  virtual absl::Status merge(const Metric& other) = 0;
  // The partial state merge() reads, as tensors in a fixed order, and its inverse on a fresh
  // instance after begin(): a data-parallel pass sends every rank's state to rank 0, which loads
  // each into a fresh instance and merges them in rank order (the shards are contiguous, so the
  // order of the split is kept).
  virtual std::vector<torch::Tensor> partial_state() const = 0;
  virtual absl::Status load_partial_state(const std::vector<torch::Tensor>& state) = 0;
  // {"values": {name: number, ...}, "settings": {...}}: every setting that shaped the values is
  // recorded beside them. Optionally "per_prototype": {name: [P numbers or null]}, kept in the
  // metric's stage record (the gallery shows purity per prototype from it).
  virtual absl::StatusOr<nlohmann::json> compute() = 0;

  // `protoquant evaluate --dump`: where this metric puts the arrays it computed from beyond the
  // pass's shared inputs (noise realisations, attacked maps, top-k lists), named within its view.
  void dump_to(const EvalDump& dump) { dump_ = dump; }

 protected:
  std::optional<EvalDump> dump_;
};

// For a metric that needs part keypoints: OK, or, on a dataset without them, one clear line
// ("metric 'purity' needs part keypoints, and dataset 'fashion_mnist' has none").
absl::Status require_parts(const EvalContext& context, const std::string& metric);

}  // namespace protoquant
