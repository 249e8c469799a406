// A well-formed third-party plugin: a metric reporting the fraction of test samples of one class.
#include "protoquant/plugin.h"

namespace {

class ClassShare : public protoquant::Metric {
 public:
  explicit ClassShare(int64_t label) : label_(label) {}
  protoquant::MetricNeeds needs() const override { return {}; }
  absl::Status update(const protoquant::EvalBatch& batch) override {
    matching_ += batch.labels.eq(label_).sum().item<int64_t>();
    samples_ += batch.labels.size(0);
    return absl::OkStatus();
  }
  absl::Status merge(const protoquant::Metric& other) override {
    const auto& o = dynamic_cast<const ClassShare&>(other);
    matching_ += o.matching_;
    samples_ += o.samples_;
    return absl::OkStatus();
  }
  std::vector<torch::Tensor> partial_state() const override {
    return {torch::tensor({matching_, samples_}, torch::kInt64)};
  }
  absl::Status load_partial_state(const std::vector<torch::Tensor>& state) override {
    if (state.size() != 1 || state[0].numel() != 2) return absl::InvalidArgumentError("class_share: bad partial state");
    matching_ = state[0][0].item<int64_t>();
    samples_ = state[0][1].item<int64_t>();
    return absl::OkStatus();
  }
  absl::StatusOr<nlohmann::json> compute() override {
    const double share = samples_ ? static_cast<double>(matching_) / static_cast<double>(samples_) : 0.0;
    return nlohmann::json{{"values", {{"class_share", share}}}, {"settings", {{"label", label_}}}};
  }

 private:
  int64_t label_;
  int64_t matching_ = 0, samples_ = 0;
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
