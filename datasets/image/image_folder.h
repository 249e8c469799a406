// image_folder: the `root/<split>/<class>/<image>` layout of ImageNet, Stanford Cars and
// Flowers-102 (torchvision's ImageFolder per split). Class indices come from the sorted class
// folder names, taken over all splits so every split numbers classes alike. layout = "files"
// reads every image under root as one unlabelled "train" split (the loader benchmark).
#pragma once

#include <memory>

#include <absl/status/statusor.h>

#include "image_dataset.h"

namespace protoquant::datasets {

class ImageFolderDataset : public ImageDataset {
 public:
  static ParamSchema schema();
  static absl::StatusOr<std::shared_ptr<ImageFolderDataset>> open(const Params& params, const BuildContext& context);

 private:
  using ImageDataset::ImageDataset;
};

}  // namespace protoquant::datasets
