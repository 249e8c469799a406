// cub200: CUB-200-2011 read from its official files: images.txt, image_class_labels.txt,
// train_test_split.txt, bounding_boxes.txt, classes.txt (optional), parts/parts.txt and
// parts/part_locs.txt (optional: has_parts), images/<class>/<file>. The 15 part keypoints with
// their visibility follow every crop, resize and flip; crop_to_box cuts the bird's box out first.
#pragma once

#include <memory>

#include <absl/status/statusor.h>

#include "image_dataset.h"

namespace protoquant::datasets {

class Cub200Dataset : public ImageDataset {
 public:
  static ParamSchema schema();
  static absl::StatusOr<std::shared_ptr<Cub200Dataset>> open(const Params& params, const BuildContext& context);

 private:
  using ImageDataset::ImageDataset;
};

}  // namespace protoquant::datasets
