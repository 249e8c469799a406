// The built-in head plugin.
#include "protoquant/plugin.h"
#include "protoquant_head.h"

namespace protoquant::heads {

absl::Status register_heads(Registry& registry) {
  return registry.heads.add(
      {"protoquant",
       "cosine similarity to the codewords, softmax over prototypes, max-pool, non-negative linear layer",
       ParamSchema{
           ParamSpec::Float("temperature", 0.1, "tau of softmax_p(S / tau)").range(1e-6, 1e6),
           ParamSpec::Float("sparsity", 0.0, "lambda of the L1 penalty lambda * sum(relu(W))").range(0.0, 1e6),
           ParamSpec::Bool("pipnet_logits", false, "train on PIP-Net's log((a relu(W)^T)^2 + 1)"),
           ParamSpec::Bool("train_prototypes", true, "keep training the codewords in this stage"),
           ParamSpec::Float("weight_mean", 1.0, "mean of W's normal init").range(-1e3, 1e3),
           ParamSpec::Float("weight_std", 0.1, "std of W's normal init").range(0.0, 1e3),
           ParamSpec::String("dtype", "fp32", "compute dtype of the similarity GEMMs and softmax")
               .one_of({"fp32", "bf16"})},
       [](const Params& p, const BuildContext& c) -> absl::StatusOr<std::shared_ptr<Head>> {
         if (!c.prototypes.defined() || c.prototypes.dim() != 2) {
           return absl::InvalidArgumentError("the protoquant head needs the quantizer's P x D codebook");
         }
         if (c.num_classes < 1) return absl::InvalidArgumentError("the protoquant head needs the class count");
         ProtoQuantHeadOptions o;
         o.temperature = p.get_float("temperature");
         o.sparsity = p.get_float("sparsity");
         o.pipnet_logits = p.get_bool("pipnet_logits");
         o.train_prototypes = p.get_bool("train_prototypes");
         o.weight_mean = p.get_float("weight_mean");
         o.weight_std = p.get_float("weight_std");
         o.bf16 = p.get_string("dtype") == "bf16";
         return std::make_shared<ProtoQuantHead>(c.prototypes, c.num_classes, c.prototype_groups, o);
       }});
}

}  // namespace protoquant::heads

PROTOQUANT_PLUGIN(protoquant::heads::register_heads)
