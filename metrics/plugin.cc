// The built-in metric plugin: accuracy, the interpretability metrics (METHOD.md) and the
// codebook's usage. Each is a streaming Metric (protoquant/metric.h).
#include "accuracy.h"
#include "codebook_usage.h"
#include "consistency.h"
#include "funnybirds.h"
#include "grounding.h"
#include "protoquant/plugin.h"
#include "purity.h"
#include "sizes.h"
#include "spatial_misalignment.h"
#include "stability.h"

namespace protoquant::metrics {

namespace {
using Built = absl::StatusOr<std::shared_ptr<Metric>>;
}  // namespace

absl::Status register_metrics(Registry& registry) {
  PQ_RETURN_IF_ERROR(registry.metrics.add(
      {"accuracy", "top-1 and top-k accuracy of the interpretable model and of the black box",
       ParamSchema{ParamSpec::Int("top_k", 5, "k of the top-k accuracy").range(1, 1000)},
       [](const Params& p, const BuildContext&) -> Built { return std::make_shared<Accuracy>(p.get_int("top_k")); }}));
  PQ_RETURN_IF_ERROR(registry.metrics.add(
      {"consistency", "EvalProtoPNet's consistency: prototypes that land on the same part across their classes' images",
       Consistency::schema(), [](const Params& p, const BuildContext&) -> Built {
         return std::make_shared<Consistency>(localisation_settings(p), prototype_class_rule(p),
                                              p.get_float("part_threshold"), p.get_bool("merge_left_right"),
                                              static_cast<uint64_t>(p.get_int("chance_seed")));
       }}));
  PQ_RETURN_IF_ERROR(registry.metrics.add(
      {"stability", "EvalProtoPNet's stability: the parts a prototype lands on, unchanged under input noise",
       Stability::schema(), [](const Params& p, const BuildContext&) -> Built {
         NoiseSettings noise{p.get_float("noise_std"), p.get_float("noise_clip"), static_cast<uint64_t>(p.get_int("seed"))};
         return std::make_shared<Stability>(localisation_settings(p), prototype_class_rule(p), noise,
                                            p.get_string("compare"), static_cast<uint64_t>(p.get_int("chance_seed")));
       }}));
  PQ_RETURN_IF_ERROR(registry.metrics.add(
      {"purity", "PIP-Net's purity: how often a prototype's top training patches contain its best part",
       Purity::schema(), [](const Params& p, const BuildContext&) -> Built {
         return std::make_shared<Purity>(localisation_settings(p), p.get_int("top_k"), p.get_float("weight_threshold"),
                                         p.get_bool("merge_left_right"), p.get_string("denominator"),
                                         static_cast<uint64_t>(p.get_int("chance_seed")));
       }}));
  PQ_RETURN_IF_ERROR(registry.metrics.add(
      {"grounding", "mean top-k cosine similarity of each prototype to real training feature vectors",
       Grounding::schema(), [](const Params& p, const BuildContext&) -> Built {
         return std::make_shared<Grounding>(p.get_int("top_k"), p.get_float("grounded_threshold"));
       }}));
  PQ_RETURN_IF_ERROR(registry.metrics.add(
      {"sizes", "global size, sparsity and local size (per image and per class) of the class layer",
       Sizes::schema(), [](const Params& p, const BuildContext&) -> Built {
         return std::make_shared<Sizes>(p.get_float("global_threshold"), p.get_float("local_threshold"),
                                        p.get_float("class_threshold"));
       }}));
  PQ_RETURN_IF_ERROR(registry.metrics.add(
      {"spatial_misalignment", "Sacha et al.'s PAC, PRC, PLC and AC under an attack outside the target prototype's region",
       SpatialMisalignment::schema(), [](const Params& p, const BuildContext&) -> Built {
         AttackSettings a;
         a.attack = p.get_string("attack");
         a.epsilon = p.get_float("epsilon");
         a.step = p.get_float("step");
         a.iterations = p.get_int("iterations");
         a.quantile = p.get_float("quantile");
         a.margin = p.get_int("margin");
         a.plc_quantile = p.get_float("plc_quantile");
         a.activation = p.get_string("activation");
         a.seed = static_cast<uint64_t>(p.get_int("seed"));
         a.dtype = p.get_string("dtype");
         return std::make_shared<SpatialMisalignment>(a, prototype_class_rule(p));
       }}));
  PQ_RETURN_IF_ERROR(registry.metrics.add(
      {"funnybirds",
       "FunnyBirds' protocols (accuracy, CSDC, PC, DC, D, SD, TS, BI; completeness, correctness, contrastivity) by "
       "re-rendering the images without parts",
       FunnyBirds::schema(), [](const Params& p, const BuildContext&) -> Built { return FunnyBirds::build(p); }}));
  return registry.metrics.add({"codebook_usage", "codes used, dead fraction and perplexity on the evaluated split",
                               ParamSchema{},
                               [](const Params&, const BuildContext&) -> Built {
                                 return std::make_shared<CodebookUsageMetric>();
                               }});
}

}  // namespace protoquant::metrics

PROTOQUANT_PLUGIN(protoquant::metrics::register_metrics)
