// What the torchvision-style backbones (resnet*, convnext_tiny) share: loading a weights file by
// torchvision's state_dict names, the head policy for transfer to a dataset with other classes,
// training only the head g in stage 0, and the parameters every such backbone takes.
#pragma once

#include <string>

#include <absl/status/status.h>

#include "protoquant/backbone.h"
#include "protoquant/params.h"
#include "weights.h"

namespace protoquant::backbones {

class TorchvisionBackbone : public Backbone {
 public:
  // `head_module` is the child that holds g's layers ("fc", "classifier"); `head_linear` is the
  // final linear layer, re-initialised for a new class count ("fc", "classifier.2").
  TorchvisionBackbone(std::string arch, std::string head_module, std::string head_linear)
      : arch_(std::move(arch)), head_module_(std::move(head_module)), head_linear_(std::move(head_linear)) {}

  // Reads `path` and copies it in (see load_state_dict); logs what was loaded to stderr.
  absl::Status load_weights(const std::string& path, HeadPolicy policy);

  // With `head_only`, stage 0 trains g alone: every other parameter stops requiring grad and the
  // body stays in eval mode (BatchNorm statistics and stochastic depth frozen) even under train().
  void set_head_only(bool head_only);
  void train(bool on = true) override;

  const std::string& arch() const { return arch_; }

 protected:
  // Stores every 4-D weight as NHWC: oneDNN's fast convolution kernels (see small_cnn.cc).
  void use_channels_last();

 private:
  std::string arch_, head_module_, head_linear_;
  bool head_only_ = false;
};

// The parameters every torchvision-style backbone takes: weights, head, trainable.
ParamSchema torchvision_schema();
// Applies those parameters to a freshly built backbone.
absl::Status configure(TorchvisionBackbone& backbone, const Params& params);

}  // namespace protoquant::backbones
