// Any TorchScript module exported from Python (torch.jit.save) as the black box f. One output is
// the feature map: a B x D x H x W grid is used as is; ViT tokens B x N x D (CLS token dropped
// when present) become a B x D x H x W grid here, at the backbone's boundary. The scripted module
// is frozen: its parameters are not the nn::Module's, so stage 0 never trains them. g is a
// trainable avgpool + linear head ("fc"), or a scripted head (head_path), frozen too.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "protoquant/backbone.h"
#include "protoquant/build_context.h"
#include "protoquant/params.h"

namespace protoquant::backbones {

// How the selected output becomes the feature map.
struct FeatureLayout {
  std::string output;     // "" = the output itself, or element 0 of a tuple/list; else index or dict key
  std::string tokens;     // auto (3-D = tokens, 4-D = grid), grid, tokens
  std::string cls_token;  // auto (drop when N - 1 is the grid size and N is not), drop, keep
  std::vector<int64_t> grid;  // {h, w} of the token grid; empty = square
};

// The module's output -> B x D x H x W. Throws c10::Error with a one-line reason on a mismatch.
torch::Tensor feature_map(const c10::IValue& output, const FeatureLayout& layout);

class TorchScriptBackbone : public Backbone {
 public:
  // `head`: a scripted g; without one, a linear layer D -> num_classes after average pooling.
  TorchScriptBackbone(torch::jit::Module module, FeatureLayout layout, int64_t channels,
                      std::optional<torch::jit::Module> head, int64_t num_classes);

  torch::Tensor features(const torch::Tensor& images) override;
  torch::Tensor classify(const torch::Tensor& features) override;
  int64_t channels() const override { return channels_; }
  BackboneGeometry geometry() const override { return geometry_; }
  void set_geometry(const BackboneGeometry& geometry) { geometry_ = geometry; }

  // The scripted modules always stay in eval mode: they are frozen.
  void train(bool on = true) override;
  // The scripted modules are not registered children, so they move here.
  using Backbone::to;
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, bool non_blocking = false) override;

 private:
  torch::jit::Module module_;
  FeatureLayout layout_;
  int64_t channels_;
  BackboneGeometry geometry_;
  std::optional<torch::jit::Module> head_;
  torch::nn::Linear fc_{nullptr};
};

ParamSchema torchscript_schema();
// Loads the module(s), runs one dummy batch (1 x C x H x W zeros, the dataset's image size) to
// check the output and infer D, and builds the backbone.
absl::StatusOr<std::shared_ptr<Backbone>> build_torchscript_backbone(const Params& params, const BuildContext& context);

}  // namespace protoquant::backbones
