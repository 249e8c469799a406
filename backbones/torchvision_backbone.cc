#include "torchvision_backbone.h"

#include <fmt/format.h>

#include "protoquant/status.h"

namespace protoquant::backbones {

absl::Status TorchvisionBackbone::load_weights(const std::string& path, HeadPolicy policy) {
  PQ_ASSIGN_OR_RETURN(const StateDict weights, read_state_dict(path));
  PQ_ASSIGN_OR_RETURN(const LoadReport report, load_state_dict(*this, weights, path, head_linear_, policy));
  fmt::print(stderr, "[{}] loaded {} tensors from {}; head: {}\n", arch_, report.tensors, path,
             report.head_loaded ? fmt::format("loaded ({} classes)", report.checkpoint_classes)
                                : fmt::format("new, freshly initialised (the checkpoint's has {} classes)",
                                              report.checkpoint_classes));
  return absl::OkStatus();
}

void TorchvisionBackbone::set_head_only(bool head_only) {
  head_only_ = head_only;
  for (const auto& child : named_children()) {
    const bool trainable = !head_only || child.key() == head_module_;
    for (auto& p : child.value()->parameters()) p.set_requires_grad(trainable);
  }
  train(is_training());
}

void TorchvisionBackbone::train(bool on) {
  Backbone::train(on);
  if (!head_only_) return;
  for (const auto& child : named_children()) {
    if (child.key() != head_module_) child.value()->eval();
  }
}

void TorchvisionBackbone::use_channels_last() {
  torch::NoGradGuard no_grad;
  for (auto& p : parameters()) {
    if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
  }
}

ParamSchema torchvision_schema() {
  return ParamSchema{
      ParamSpec::String("weights", "",
                        "weights file from tools/export_backbone.py (torchvision state_dict names); "
                        "empty = random initialisation")
          .path(),
      ParamSpec::String("head", "auto",
                        "the checkpoint's classifier: load, new (fresh head for this dataset's classes), or "
                        "auto (load when its class count matches the dataset's)")
          .one_of({"load", "new", "auto"}),
      ParamSpec::String("trainable", "all",
                        "what stage 0 trains: all, or head (g only; the body stays frozen in eval mode)")
          .one_of({"all", "head"}),
  };
}

absl::Status configure(TorchvisionBackbone& backbone, const Params& params) {
  const std::string& weights = params.get_string("weights");
  if (!weights.empty()) {
    PQ_ASSIGN_OR_RETURN(const HeadPolicy policy, parse_head_policy(params.get_string("head")));
    PQ_RETURN_IF_ERROR(backbone.load_weights(weights, policy));
  }
  backbone.set_head_only(params.get_string("trainable") == "head");
  return absl::OkStatus();
}

}  // namespace protoquant::backbones
