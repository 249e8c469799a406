// The built-in quantizer plugin: vq, ema_vq, pq, rvq.
#include "ema_vq.h"
#include "pq.h"
#include "protoquant/plugin.h"
#include "rvq.h"
#include "vq.h"

namespace protoquant::quantizers {

namespace {

// Parameters every quantizer shares, with the variant's own defaults.
ParamSchema common_schema(const std::string& metric, const std::string& init, const std::string& codes_doc) {
  return ParamSchema{
      ParamSpec::Int("codes", 256, codes_doc).range(1, 1 << 20),
      ParamSpec::String("metric", metric, "assignment rule").one_of({"cosine", "euclidean"}),
      ParamSpec::String("init", init, "codebook initialisation (kmeans: k-means++ and Lloyd on real features)")
          .one_of({"orthogonal", "uniform", "normal", "kmeans"}),
      ParamSpec::Int("kmeans_iterations", 10, "Lloyd iterations of the kmeans init").range(0, 1000),
      ParamSpec::String("search", "exact", "nearest-code search: exact fp32 GEMM, or bf16 candidates re-ranked in fp32")
          .one_of({"exact", "bf16"}),
      ParamSpec::Int("rerank_candidates", 4, "candidates per vector re-ranked in fp32 by the bf16 search").range(1, 1024)};
}

SearchOptions search_options(const Params& p) {
  return SearchOptions{p.get_string("search") == "bf16", p.get_int("rerank_candidates")};
}

absl::Status need_channels(const BuildContext& c, const char* name) {
  if (c.feature_channels < 1) return absl::InvalidArgumentError(fmt::format("{} needs the backbone's channel count", name));
  return absl::OkStatus();
}

}  // namespace

absl::Status register_quantizers(Registry& registry) {
  PQ_RETURN_IF_ERROR(registry.quantizers.add(
      {"vq", "vector quantization: hard cosine/euclidean argmax, raw codeword substitution, codebook MSE",
       common_schema("cosine", "orthogonal", "K, the number of codewords (prototypes)"),
       [](const Params& p, const BuildContext& c) -> absl::StatusOr<std::shared_ptr<Quantizer>> {
         PQ_RETURN_IF_ERROR(need_channels(c, "vq"));
         return std::make_shared<VectorQuantizer>(VqOptions{c.feature_channels, p.get_int("codes"),
                                                            p.get_string("metric"), p.get_string("init"),
                                                            p.get_int("kmeans_iterations"), search_options(p)});
       }}));

  ParamSchema ema = common_schema("cosine", "kmeans", "K, the number of codewords (prototypes)");
  ema.add(ParamSpec::Float("decay", 0.99, "EMA decay d of counts and sums").range(0.0, 1.0));
  ema.add(ParamSpec::Float("eps", 1e-5, "Laplace smoothing of the counts").range(0.0, 1.0));
  ema.add(ParamSpec::Float("restart_threshold", 0.1,
                           "re-seed codes whose EMA count < this x expected count (B*H*W/K); 0 = never")
              .range(0.0, 1e6));
  PQ_RETURN_IF_ERROR(registry.quantizers.add(
      {"ema_vq", "VQ with an exponential-moving-average codebook, Laplace smoothing and dead-code restart", ema,
       [](const Params& p, const BuildContext& c) -> absl::StatusOr<std::shared_ptr<Quantizer>> {
         PQ_RETURN_IF_ERROR(need_channels(c, "ema_vq"));
         EmaVqOptions o;
         o.dim = c.feature_channels;
         o.codes = p.get_int("codes");
         o.metric = p.get_string("metric");
         o.init = p.get_string("init");
         o.kmeans_iterations = p.get_int("kmeans_iterations");
         o.decay = p.get_float("decay");
         o.eps = p.get_float("eps");
         o.restart_threshold = p.get_float("restart_threshold");
         o.search = search_options(p);
         return std::make_shared<EmaVectorQuantizer>(o);
       }}));

  ParamSchema pq = common_schema("euclidean", "kmeans", "K, codes per sub-space");
  pq.add(ParamSpec::Int("subspaces", 8, "M, sub-spaces of D/M dimensions (D must be divisible by M)").range(1, 4096));
  PQ_RETURN_IF_ERROR(registry.quantizers.add(
      {"pq", "product quantization (FAISS ProductQuantizer semantics): M sub-spaces x K codes", pq,
       [](const Params& p, const BuildContext& c) -> absl::StatusOr<std::shared_ptr<Quantizer>> {
         PQ_RETURN_IF_ERROR(need_channels(c, "pq"));
         const int64_t m = p.get_int("subspaces");
         if (c.feature_channels % m != 0) {
           return absl::InvalidArgumentError(fmt::format(
               "pq: the backbone's D = {} is not divisible by quantizer.subspaces = {}", c.feature_channels, m));
         }
         return std::make_shared<ProductQuantizer>(PqOptions{c.feature_channels, m, p.get_int("codes"),
                                                             p.get_string("metric"), p.get_string("init"),
                                                             p.get_int("kmeans_iterations"), search_options(p)});
       }}));

  ParamSchema rvq = common_schema("cosine", "kmeans", "K, codes per level");
  rvq.add(ParamSpec::Int("levels", 2, "L, residual levels").range(1, 64));
  return registry.quantizers.add(
      {"rvq", "residual VQ: L levels, each quantizing what the previous levels left", rvq,
       [](const Params& p, const BuildContext& c) -> absl::StatusOr<std::shared_ptr<Quantizer>> {
         PQ_RETURN_IF_ERROR(need_channels(c, "rvq"));
         return std::make_shared<ResidualQuantizer>(RvqOptions{c.feature_channels, p.get_int("levels"),
                                                               p.get_int("codes"), p.get_string("metric"),
                                                               p.get_string("init"), p.get_int("kmeans_iterations"),
                                                               search_options(p)});
       }});
}

}  // namespace protoquant::quantizers

PROTOQUANT_PLUGIN(protoquant::quantizers::register_quantizers)
