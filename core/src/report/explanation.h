// A local explanation of one image ("this looks like that", METHOD.md stage 5): the prototypes
// with the largest contribution a[p] * relu(W[c, p]) to a class, where each fires in the image
// (its similarity map upsampled as the metrics localise it), and each one's nearest training
// patches: the training locations most similar to it, real image parts.
#pragma once

#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <opencv2/core.hpp>
#include <torch/types.h>

#include "protoquant/evaluation_pass.h"
#include "protoquant/backbone.h"
#include "protoquant/dataset.h"
#include "protoquant/model.h"
#include "protoquant/trainer.h"

namespace protoquant {

struct ExplainedPrototype {
  int64_t prototype = 0;
  double presence = 0, weight = 0, contribution = 0;
  int64_t peak_row = 0, peak_column = 0;  // the maximum of its upsampled map, input pixels
  torch::Tensor map;                      // H x W upsampled similarity map
  struct Patch {
    int64_t image = 0;          // index in the training split
    int64_t row = 0, column = 0;  // feature cell
    double similarity = 0;
  };
  std::vector<Patch> nearest;  // highest similarity first
};

struct Explanation {
  int64_t predicted = 0, explained_class = 0, label = -1;
  double class_score = 0;  // the class's logit: the sum of every prototype's contribution
  int64_t grid_height = 0, grid_width = 0;  // the feature map's
  std::vector<ExplainedPrototype> prototypes;  // the top ones, largest contribution first
};

// For each prototype in `prototypes` (int64 indices), its `count` training cells of highest
// cosine similarity, at most one per training image, highest first.
absl::StatusOr<std::vector<std::vector<ExplainedPrototype::Patch>>> nearest_patches(Model& model, TensorSource& train,
                                                                                   const torch::Tensor& prototypes,
                                                                                   int64_t count);

// `image`: 1 x c x H x W normalised. `train`: the training split's feature maps (nearest patches).
// explained_class < 0: the predicted class. patches = 0: no nearest patches searched (a caller
// that holds them for every prototype fills them in). `features_of`: the run's image features
// (RunState::image_features()), so the image goes through the backbone as the run's features did.
absl::StatusOr<Explanation> explain_image(Model& model, const torch::Tensor& image, TensorSource& train,
                                          int64_t top, int64_t explained_class, int64_t patches,
                                          const ImageFeatures& features_of);

// The prototype gallery: one row per prototype (`per_page` rows a page): its strongest classes
// with their weights, its codebook usage and purity when known, and its nearest training patches.
struct GalleryOptions {
  torch::Tensor prototypes;          // which, in this order (1-D int64); undefined: all, by index
  torch::Tensor usage;               // P counts on the evaluated split, or undefined
  std::vector<double> purity;        // P values (NaN: not evaluated), or empty
  int64_t patches = 10;              // nearest training patches per prototype
  int64_t per_page = 16;
  // Precomputed nearest patches of every prototype (index = prototype), or empty: searched here.
  std::vector<std::vector<ExplainedPrototype::Patch>> nearest;
};
absl::StatusOr<std::vector<cv::Mat>> draw_gallery(Model& model, TensorSource& train, Dataset& dataset,
                                                  const std::string& train_split, const GalleryOptions& options);

// The input region feature cell (row, column) of a grid_height x grid_width map sees in a
// height x width input: its receptive field (or two strides when unknown), centred where the
// geometry centres the cell's field (else on the cell's centre), clipped to the image.
cv::Rect cell_region(int64_t row, int64_t column, const BackboneGeometry& geometry, int64_t height, int64_t width,
                     int64_t grid_height, int64_t grid_width);

// The picture: the input, then a row per prototype: the map over the input with the box around
// its peak, its contribution, and its nearest training patches (cut from the training images).
absl::StatusOr<cv::Mat> draw_explanation(const Explanation& explanation, const torch::Tensor& image,
                                         const torch::Tensor& parts, Dataset& dataset, const std::string& train_split,
                                         const BackboneGeometry& geometry);

}  // namespace protoquant
