// The built-in head plugin.
#include "protoquant/plugin.h"
#include "free_prototypes.h"
#include "protoquant_head.h"

namespace protoquant::heads {

namespace {

// What both heads share: the softmax temperature and the class layer's init, penalty and logits.
ParamSchema shared_schema() {
  return ParamSchema{
      ParamSpec::Float("temperature", 0.1, "tau of softmax_p(S / tau)").range(1e-6, 1e6),
      ParamSpec::Float("sparsity", 0.0, "lambda of the L1 penalty lambda * sum(relu(W))").range(0.0, 1e6),
      ParamSpec::Bool("pipnet_logits", false, "train on PIP-Net's log((a relu(W)^T)^2 + 1)"),
      ParamSpec::Float("weight_mean", 1.0, "mean of W's normal init").range(-1e3, 1e3),
      ParamSpec::Float("weight_std", 0.1, "std of W's normal init").range(0.0, 1e3)};
}

template <class Options>
Options shared_options(const Params& p) {
  Options o;
  o.temperature = p.get_float("temperature");
  o.sparsity = p.get_float("sparsity");
  o.pipnet_logits = p.get_bool("pipnet_logits");
  o.weight_mean = p.get_float("weight_mean");
  o.weight_std = p.get_float("weight_std");
  return o;
}

}  // namespace

absl::Status register_heads(Registry& registry) {
  PQ_RETURN_IF_ERROR(registry.heads.add(
      {"free_prototypes",
       "the PIP-Net-style baseline: free prototype vectors (no codebook), same similarity, softmax, max-pool and "
       "non-negative layer",
       ParamSchema{ParamSpec::Int("prototypes", 128, "P, the number of free prototypes").range(1, 1 << 20)}.extend(
           shared_schema()),
       [](const Params& p, const BuildContext& c) -> absl::StatusOr<std::shared_ptr<Head>> {
         if (c.feature_channels < 1 || c.num_classes < 1) {
           return absl::InvalidArgumentError("free_prototypes needs the backbone's channels and the class count");
         }
         if (c.prototypes.defined()) {
           return absl::InvalidArgumentError(
               "free_prototypes learns its own prototypes: remove [quantizer] (it would train an unused codebook)");
         }
         auto o = shared_options<FreePrototypesOptions>(p);
         o.prototypes = p.get_int("prototypes");
         return std::make_shared<FreePrototypesHead>(c.feature_channels, c.num_classes, o);
       }}));
  return registry.heads.add(
      {"protoquant",
       "cosine similarity to the codewords, softmax over prototypes, max-pool, non-negative linear layer",
       shared_schema()
           .add(ParamSpec::Bool("train_prototypes", true, "keep training the codewords in this stage"))
           .add(ParamSpec::String("dtype", "fp32", "compute dtype of the similarity GEMMs and softmax")
                    .one_of({"fp32", "bf16"})),
       [](const Params& p, const BuildContext& c) -> absl::StatusOr<std::shared_ptr<Head>> {
         if (!c.prototypes.defined() || c.prototypes.dim() != 2) {
           return absl::InvalidArgumentError("the protoquant head needs a [quantizer]: its prototypes are the codebook's codewords");
         }
         if (c.num_classes < 1) return absl::InvalidArgumentError("the protoquant head needs the class count");
         auto o = shared_options<ProtoQuantHeadOptions>(p);
         o.train_prototypes = p.get_bool("train_prototypes");
         o.bf16 = p.get_string("dtype") == "bf16";
         return std::make_shared<ProtoQuantHead>(c.prototypes, c.num_classes, c.prototype_groups, o);
       }});
}

}  // namespace protoquant::heads

PROTOQUANT_PLUGIN(protoquant::heads::register_heads)
