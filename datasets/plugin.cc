// The built-in dataset plugin.
#include "idx_dataset.h"
#include "protoquant/plugin.h"

namespace protoquant::datasets {

absl::Status register_datasets(Registry& registry) {
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
