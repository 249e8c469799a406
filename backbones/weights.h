// Reading weight files exported from Python (tools/export_backbone.py) and copying them into a
// module by torchvision's state_dict names, with one-line errors that name the file and the key.
#pragma once

#include <map>
#include <string>

#include <absl/status/status.h>
#include <absl/status/statusor.h>
#include <torch/torch.h>

namespace protoquant::backbones {

// name -> tensor, sorted by name.
using StateDict = std::map<std::string, torch::Tensor>;

// Reads a `torch.save(dict_of_tensors, path)` file (PyTorch's zip format). LibTorch 1.13 reads a
// plain dict but not an OrderedDict (what `model.state_dict()` is: its unpickler turns
// `collections.OrderedDict` into None) nor the legacy non-zip format; both are rejected with a
// hint to convert them with tools/export_backbone.py --from.
absl::StatusOr<StateDict> read_state_dict(const std::string& path);

// What to do with the checkpoint's classifier head (the final linear layer of g).
enum class HeadPolicy {
  kLoad,  // load it; a class count different from the dataset's is an error
  kNew,   // keep the freshly initialised head
  kAuto,  // load it when its class count matches the dataset's, otherwise keep the fresh one
};
absl::StatusOr<HeadPolicy> parse_head_policy(const std::string& text);

struct LoadReport {
  int64_t tensors = 0;      // tensors copied into the module
  bool head_loaded = false;
  int64_t checkpoint_classes = 0;  // rows of the checkpoint's head weight
};

// Copies every parameter and buffer of `module` from `weights` (read from `path`, named in
// errors). Keys must match exactly: a missing key, an unexpected key or a shape mismatch is an
// error. BatchNorm's num_batches_tracked is ignored on both sides (eval mode never reads it).
// `head_linear` is the name of the final linear layer (e.g. "fc", "classifier.2"); whether its
// weight and bias are loaded follows `policy`.
absl::StatusOr<LoadReport> load_state_dict(torch::nn::Module& module, const StateDict& weights,
                                           const std::string& path, const std::string& head_linear,
                                           HeadPolicy policy);

}  // namespace protoquant::backbones
