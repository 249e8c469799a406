// The built-in quantizer plugin.
#include "protoquant/plugin.h"
#include "vq.h"

namespace protoquant::quantizers {

absl::Status register_quantizers(Registry& registry) {
  return registry.quantizers.add(
      {"vq",
       "vector quantization: hard cosine/euclidean argmax, raw codeword substitution, codebook MSE",
       ParamSchema{
           ParamSpec::Int("codes", 256, "K, the number of codewords (prototypes)").range(1, 1 << 20),
           ParamSpec::String("metric", "cosine", "assignment rule").one_of({"cosine", "euclidean"}),
           ParamSpec::String("init", "orthogonal", "codebook initialisation")
               .one_of({"orthogonal", "uniform", "normal", "kmeans"}),
           ParamSpec::Int("kmeans_iterations", 10, "Lloyd iterations of the kmeans init").range(0, 1000)},
       [](const Params& p, const BuildContext& c) -> absl::StatusOr<std::shared_ptr<Quantizer>> {
         if (c.feature_channels < 1) return absl::InvalidArgumentError("vq needs the backbone's channel count");
         VqOptions o;
         o.dim = c.feature_channels;
         o.codes = p.get_int("codes");
         o.metric = p.get_string("metric");
         o.init = p.get_string("init");
         o.kmeans_iterations = p.get_int("kmeans_iterations");
         return std::make_shared<VectorQuantizer>(o);
       }});
}

}  // namespace protoquant::quantizers

PROTOQUANT_PLUGIN(protoquant::quantizers::register_quantizers)
