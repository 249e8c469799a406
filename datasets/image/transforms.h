// Image transforms as manifest entries ("random_resized_crop:224", "hflip", "trivial_augment",
// ...), applied to one sample: an 8-bit BGR image plus its part keypoints and object box, which
// every geometric transform moves with the pixels. Coordinates are pixels with pixel centres at
// integers, so a keypoint on pixel (x, y) stays on the pixel that pixel's content moves to.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <opencv2/core.hpp>

namespace protoquant::datasets {

using Rng = std::mt19937_64;

struct Keypoint {
  float x = 0, y = 0;
  bool visible = false;
};

struct Sample {
  cv::Mat image;                 // CV_8UC3, BGR
  std::vector<Keypoint> parts;   // empty when the dataset has none
  // Object box (x, y, width, height) in edge coordinates: pixel i spans [i, i + 1), so a box
  // around the whole image is (0, 0, W, H).
  std::optional<cv::Rect2f> box;
  // Optional: what each pixel shows (CV_32S, the image's size; the codes are the dataset's). Every
  // geometric transform moves it with the pixels, by nearest neighbour; pixels a transform brings
  // in from outside the image, or erases, show 0.
  cv::Mat part_map;
};

struct Transform {
  enum class Kind { kResize, kCenterCrop, kRandomResizedCrop, kHflip, kTrivialAugment, kRandomErasing };
  Kind kind = Kind::kResize;
  std::string entry;     // as written in the manifest, for messages
  int height = 0, width = 0;  // target size; resize with one number sets width = 0 (shorter side)
  double probability = 0.5;   // hflip, random_erasing
  double min_scale = 0.08;    // random_resized_crop
};

// Parses one manifest entry; the error names the entry and lists the valid forms.
absl::StatusOr<Transform> parse_transform(const std::string& entry);

// An ordered list of transforms that must end in a fixed output size.
class Pipeline {
 public:
  // `what` names the parameter in errors, e.g. "train_transform". A source whose images all
  // have one size passes it as `source_size`, so a pipeline that never resizes is fine too.
  static absl::StatusOr<Pipeline> parse(const std::vector<std::string>& entries, const std::string& what,
                                        cv::Size source_size = {});

  int height() const { return height_; }
  int width() const { return width_; }
  const std::vector<Transform>& transforms() const { return transforms_; }
  // random_erasing fills with the normalisation mean (RGB in [0, 1]), which normalises to 0.
  void set_mean(const double mean[3]) { erase_fill_ = cv::Scalar(mean[2] * 255, mean[1] * 255, mean[0] * 255); }

  // Runs the pipeline on an image of `size` that `decode(reduction)` produces at 1/reduction of
  // its size (reduction 1, 2, 4 or 8; `max_reduction` 1 where the source cannot reduce). When the
  // first transform shrinks the image enough, the image is decoded reduced. `sample` holds the
  // annotations in full-size coordinates on entry and the transformed sample on return.
  // `crop` (optional) is cut out of the full-size image before the transforms (CUB boxes).
  absl::Status run(cv::Size size, int max_reduction, const std::function<absl::StatusOr<cv::Mat>(int)>& decode,
                   const std::optional<cv::Rect>& crop, Sample& sample, Rng& rng) const;

 private:
  std::vector<Transform> transforms_;
  int height_ = 0, width_ = 0;
  cv::Scalar erase_fill_{0.406 * 255, 0.456 * 255, 0.485 * 255};  // BGR
};

// Writes `image` (BGR, height x width) as RGB, (pixel / 255 - mean) / std, into the C x H x W
// float buffer `out`.
void to_normalized_chw(const cv::Mat& image, const double mean[3], const double std[3], float* out);

// Geometric primitives, exposed for the tests and for datasets that crop before transforming.
void crop_sample(Sample& sample, const cv::Rect& rect);  // rect may leave the image: zero padding
void resize_sample(Sample& sample, cv::Size size);
void hflip_sample(Sample& sample);
void warp_sample(Sample& sample, const cv::Matx23d& matrix);  // affine, zero fill
// Marks keypoints outside the image as not visible and clips the box to the image.
void clip_annotations(Sample& sample);

}  // namespace protoquant::datasets
