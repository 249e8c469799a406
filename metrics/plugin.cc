// The built-in metric plugin.
#include "accuracy.h"
#include "protoquant/plugin.h"

namespace protoquant::metrics {

absl::Status register_metrics(Registry& registry) {
  return registry.metrics.add(
      {"accuracy", "top-1 and top-k accuracy of the interpretable model and of the black box",
       ParamSchema{ParamSpec::Int("top_k", 5, "k of the top-k accuracy").range(1, 1000)},
       [](const Params& p, const BuildContext&) -> absl::StatusOr<std::shared_ptr<Metric>> {
         return std::make_shared<Accuracy>(p.get_int("top_k"));
       }});
}

}  // namespace protoquant::metrics

PROTOQUANT_PLUGIN(protoquant::metrics::register_metrics)
