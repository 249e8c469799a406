// A well-formed third-party plugin: a metric reporting the fraction of test samples of one class.
#include "protoquant/plugin.h"

namespace {

class ClassShare : public protoquant::Metric {
 public:
  explicit ClassShare(int64_t label) : label_(label) {}
  absl::StatusOr<nlohmann::json> evaluate(const protoquant::EvalContext& context) override {
    const double share = context.labels.eq(label_).to(torch::kFloat64).mean().item<double>();
    return nlohmann::json{{"values", {{"class_share", share}}}, {"settings", {{"label", label_}}}};
  }

 private:
  int64_t label_;
};

absl::Status register_extra(protoquant::Registry& registry) {
  return registry.metrics.add(
      {"class_share", "fraction of evaluated samples with a given label (test plugin)",
       protoquant::ParamSchema{protoquant::ParamSpec::Int("label", 0, "the label").min(0)},
       [](const protoquant::Params& p, const protoquant::BuildContext&)
           -> absl::StatusOr<std::shared_ptr<protoquant::Metric>> {
         return std::make_shared<ClassShare>(p.get_int("label"));
       }});
}

}  // namespace

PROTOQUANT_PLUGIN(register_extra)
