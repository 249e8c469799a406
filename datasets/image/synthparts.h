// synthparts: a procedural dataset in the spirit of FunnyBirds (Hesse et al., ICCV 2023) with
// ground truth for interpretability metrics. A vocabulary of distinct textured shapes (shape x
// texture x colour) are the parts; each class is a fixed combination of parts_per_class of them.
// An image places its class's parts at random positions on a cluttered background; each part
// may be missing (not drawn) or occluded (drawn, then covered), and both count as not visible.
// Everything is a function of (seed, split, index): the same seed gives the same images.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <absl/status/statusor.h>

#include "image_dataset.h"
#include "protoquant/dataset.h"

namespace protoquant::datasets {

struct SynthPartsConfig {
  int64_t classes = 10;
  int64_t train_per_class = 20;
  int64_t test_per_class = 10;
  int64_t parts = 12;  // vocabulary size P (every image reports all P keypoints)
  int64_t parts_per_class = 4;
  int64_t image_size = 64;
  double clutter = 0.5;    // 0: plain background, 1: dense distractors and noise
  double missing = 0.1;    // probability that a part of the class is not drawn
  double occlusion = 0.1;  // probability that a drawn part is covered by a distractor
  uint64_t seed = 0;
};

struct SynthImage {
  cv::Mat image;  // BGR, image_size x image_size
  int64_t label = 0;
  std::vector<Keypoint> parts;         // P keypoints: part centres; visible = drawn and not occluded
  std::vector<cv::Rect> part_boxes;    // P boxes (empty for parts not drawn)
  cv::Rect2f box;                      // union of the drawn parts (edge coordinates)
  // What each pixel shows (CV_32S), painted for interventions only: 0 the background (and
  // occluders), p + 1 part p, -(k + 1) background object (distractor) k.
  cv::Mat part_map;
  int64_t objects = 0;  // background objects in the scene (before any removal)
};

class SynthParts {
 public:
  // Checks the configuration (e.g. enough distinct part combinations for the classes).
  static absl::StatusOr<SynthParts> create(const SynthPartsConfig& config);

  const SynthPartsConfig& config() const { return config_; }
  int64_t size(const std::string& split) const;  // "train" or "test"
  std::vector<std::string> part_names() const;
  std::vector<std::string> class_names() const;
  const std::vector<int64_t>& class_parts(int64_t label) const { return class_parts_[static_cast<size_t>(label)]; }
  // Sample `index` of `split`: label index % classes, content from (seed, split, index). An
  // intervention leaves parts, or a background object, out of the same scene: every random draw
  // is made as without it (placement, colours, noise), only the removed things are not painted;
  // with one (even one that removes nothing) the part map is painted too.
  SynthImage draw(const std::string& split, int64_t index, const Intervention* intervention = nullptr) const;

 private:
  SynthPartsConfig config_;
  std::vector<std::vector<int64_t>> class_parts_;  // per class: its vocabulary part ids
};

class SynthPartsDataset : public ImageDataset {
 public:
  static ParamSchema schema();
  static absl::StatusOr<std::shared_ptr<SynthPartsDataset>> open(const Params& params, const BuildContext& context);

 protected:
  absl::Status generate(const std::string& split, int64_t index, Sample& sample) const override;
  absl::Status generate_intervention(const std::string& split, int64_t index, const Intervention& intervention,
                                     Sample& sample) const override;

 private:
  SynthPartsDataset(DatasetInfo info, ImageOptions options, std::map<std::string, std::vector<ImageRecord>> splits,
                    std::string identity, std::shared_ptr<WorkerPool> pool, SynthParts generator)
      : ImageDataset(std::move(info), std::move(options), std::move(splits), std::move(identity), std::move(pool)),
        generator_(std::move(generator)) {}
  SynthParts generator_;
};

// Writes the dataset to disk in the CUB-200-2011 layout (images/<class>/<file>, images.txt,
// image_class_labels.txt, train_test_split.txt, bounding_boxes.txt, classes.txt, parts/parts.txt,
// parts/part_locs.txt) with 1-based ids as CUB has them. `extension` is "jpg" or "png".
absl::Status write_cub(const SynthParts& data, const std::filesystem::path& root, const std::string& extension = "jpg",
                       int jpeg_quality = 95);
// Writes root/<split>/<class>/<index>.<extension> (the image_folder layout).
absl::Status write_image_folder(const SynthParts& data, const std::filesystem::path& root,
                                const std::string& extension = "jpg", int jpeg_quality = 95);

}  // namespace protoquant::datasets
