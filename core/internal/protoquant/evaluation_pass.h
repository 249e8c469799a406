// One evaluation pass feeds every metric (metric.h): it walks the evaluated split (and the
// training split when a metric asks for it) in batches, computes once what the metrics declared
// (head outputs on the stored features, part keypoints and images from the dataset, code
// assignments) and hands each batch to every metric that reads that split.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include <absl/status/status.h>

#include "protoquant/dataset.h"
#include "protoquant/metric.h"
#include "protoquant/trainer.h"

namespace protoquant {

struct EvaluationSources {
  Dataset* dataset = nullptr;
  TensorSource* eval_features = nullptr;  // the evaluated split's stored feature maps
  // The training split's feature maps, asked for only when some metric reads that split.
  std::function<absl::StatusOr<TensorSource*>()> train_features;
  int64_t batch_size = 256;
  // Data-parallel: a fresh instance of metrics[i] (same type and settings). With it, each rank
  // walks its contiguous share of every split and rank 0 merges the others' partial states
  // (Metric::partial_state) into its own, so only rank 0's metrics hold the whole pass. Without
  // it every rank walks everything.
  std::function<absl::StatusOr<std::shared_ptr<Metric>>(size_t i)> fresh_metric;
};

// The union of what `metrics` declare.
MetricNeeds combined_needs(const std::vector<Metric*>& metrics);

// Calls begin() on every metric, then update() with every batch of the splits each reads (of
// this rank's share, data-parallel; see fresh_metric). The model must be in eval mode.
absl::Status run_evaluation_pass(const EvalContext& context, const EvaluationSources& sources,
                                 const std::vector<Metric*>& metrics);

// The frozen backbone's features of a batch of images, as a run computes them after stage 0 (its
// precision, its batch norms folded): RunState::image_features().
using ImageFeatures = std::function<torch::Tensor(const torch::Tensor& images)>;

// The context of a model over a dataset: class weights, geometry, sizes (from one feature map of
// `features`), forward_images (the head over `features_of`, as the run extracted `features`) and,
// where the dataset re-renders its samples, intervene.
EvalContext make_eval_context(Model& model, Dataset& dataset, const std::string& split,
                              const std::string& train_split, const TensorSource& features, int64_t split_size,
                              int64_t train_size, torch::Device device, ImageFeatures features_of);

// With --dump: a metric of the pass that records its shared inputs (per evaluated image: the
// similarity map of every prototype at feature resolution, presence, logits, labels, part
// keypoints and boxes; the class weights, prototypes, image size and backbone geometry).
std::shared_ptr<Metric> make_input_dump(const EvalDump& dump, bool with_parts);

}  // namespace protoquant
