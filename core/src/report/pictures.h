// Drawing what the model sees: a normalised batch image back to 8-bit colour, legible sizes
// (nearest-neighbour upscaling of small inputs, text of at least 12 px), part keypoints and boxes,
// and PNG files written atomically. The data preview (`protoquant data --preview`) is built on it;
// explanations and the run report will be too.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <opencv2/core.hpp>
#include <torch/types.h>

#include "protoquant/dataset.h"

namespace protoquant {

// C x H x W normalised (DatasetInfo mean/std) -> H x W 8-bit BGR (grey images as three channels).
cv::Mat displayable(const torch::Tensor& image, const DatasetInfo& info);

// The integer nearest-neighbour factor that makes `side` at least `min_side` (1 for large images).
int upscale_factor(int side, int min_side);

// Class c's name, or its number when the dataset names fewer classes (-1, an unlabelled image,
// stays "-1").
std::string class_name(const DatasetInfo& info, int64_t c);

// A distinct, saturated colour per part index (BGR).
cv::Scalar part_colour(int64_t part);

// Keypoints K x 3 (x, y, visible) and a box (x0, y0, x1, y1; undefined: none), in pixels of the
// image before it was scaled by `scale`: a filled dot per visible part (hollow when not visible),
// the box as a rectangle.
void draw_annotations(cv::Mat& canvas, const torch::Tensor& parts, const torch::Tensor& box, int scale);

// Text of at least 12 px cap-to-baseline height, black on a white band, at `origin` (top left).
void draw_label(cv::Mat& canvas, const std::string& text, cv::Point origin);

absl::Status write_png(const std::filesystem::path& path, const cv::Mat& image);

struct PreviewCell {
  int64_t index = 0;  // within the split
  int64_t label = 0;
  cv::Rect rect;      // where the sample is drawn
  int scale = 1;
};

struct Preview {
  cv::Mat image;
  std::vector<PreviewCell> cells;
};

// The first `per_class` samples of each class (up to `max_classes` classes) of `split`, one row
// per class, through the eval transform, or the training transform when `augment` is set.
absl::StatusOr<Preview> data_preview(Dataset& dataset, const std::string& split, int64_t per_class, bool augment,
                                     int64_t max_classes = 20);

}  // namespace protoquant
