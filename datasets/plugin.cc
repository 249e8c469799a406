// The built-in dataset plugin.
#include "idx_dataset.h"
#include "image/cub200.h"
#include "image/image_folder.h"
#include "image/synthparts.h"
#include "protoquant/plugin.h"
#include "protoquant/status.h"

namespace protoquant::datasets {

namespace {

// The factory of a dataset class with a static open(params, context).
template <typename T>
auto factory() {
  return [](const Params& p, const BuildContext& c) -> absl::StatusOr<std::shared_ptr<Dataset>> {
    PQ_ASSIGN_OR_RETURN(auto dataset, T::open(p, c));
    return std::shared_ptr<Dataset>(std::move(dataset));
  };
}

}  // namespace

absl::Status register_datasets(Registry& registry) {
  PQ_RETURN_IF_ERROR(registry.datasets.add(
      {"image_folder",
       "root/<split>/<class>/<image> JPEG/PNG folders (ImageNet, Stanford Cars, Flowers-102), decoded with OpenCV",
       ImageFolderDataset::schema(), factory<ImageFolderDataset>()}));
  PQ_RETURN_IF_ERROR(registry.datasets.add(
      {"cub200", "CUB-200-2011 from its official files, with the 15 part keypoints and bounding boxes",
       Cub200Dataset::schema(), factory<Cub200Dataset>()}));
  PQ_RETURN_IF_ERROR(registry.datasets.add(
      {"synthparts", "procedural classes made of known textured parts (FunnyBirds-like), with part ground truth",
       SynthPartsDataset::schema(), factory<SynthPartsDataset>()}));
  return registry.datasets.add(
      {"idx",
       "MNIST-format folder (train/t10k IDX files, .gz or raw), e.g. Fashion-MNIST; classes read from the labels",
       ParamSchema{
           ParamSpec::Required("root", ParamType::kString, "folder holding the four IDX files").path(),
           ParamSpec::String("train_images", "train-images-idx3-ubyte", "training images file (without .gz)"),
           ParamSpec::String("train_labels", "train-labels-idx1-ubyte", "training labels file (without .gz)"),
           ParamSpec::String("test_images", "t10k-images-idx3-ubyte", "test images file (without .gz)"),
           ParamSpec::String("test_labels", "t10k-labels-idx1-ubyte", "test labels file (without .gz)"),
           ParamSpec::StringList("class_names", {}, "names of the classes in label order (default: the indices)"),
           ParamSpec::Bool("normalize", true, "standardise pixels with the training split's mean and std"),
           ParamSpec::Int("limit", 0, "use only the first N samples of each split (0 = all)").min(0)},
       [](const Params& p, const BuildContext&) { return IdxDataset::open(p); }});
}

}  // namespace protoquant::datasets

PROTOQUANT_PLUGIN(protoquant::datasets::register_datasets)
