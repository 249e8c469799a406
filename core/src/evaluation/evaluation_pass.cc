#include "protoquant/evaluation_pass.h"

#include <chrono>
#include <cstring>
#include <sstream>

#include <fmt/format.h>
#include <torch/torch.h>

#include "protoquant/collectives.h"
#include "protoquant/process_group.h"
#include "protoquant/progress.h"
#include "protoquant/status.h"

namespace protoquant {

MetricNeeds combined_needs(const std::vector<Metric*>& metrics) {
  MetricNeeds all;
  all.eval_split = false;
  for (const Metric* metric : metrics) {
    const MetricNeeds n = metric->needs();
    all.similarity |= n.similarity;
    all.parts |= n.parts;
    all.images |= n.images;
    all.eval_split |= n.eval_split;
    all.train_split |= n.train_split;
    all.quantizer |= n.quantizer;
  }
  return all;
}

absl::Status require_parts(const EvalContext& context, const std::string& metric) {
  if (context.dataset == nullptr || !context.dataset->has_parts) {
    return absl::FailedPreconditionError(fmt::format("metric '{}' needs part keypoints, and dataset '{}' has none",
                                                     metric, context.dataset ? context.dataset->name : "?"));
  }
  return absl::OkStatus();
}

EvalContext make_eval_context(Model& model, Dataset& dataset, const std::string& split,
                              const std::string& train_split, const TensorSource& features, int64_t split_size,
                              int64_t train_size, torch::Device device, ImageFeatures features_of) {
  const DatasetInfo& info = dataset.info();
  EvalContext context;
  context.split = split;
  context.train_split = train_split;
  context.split_size = split_size;
  context.train_size = train_size;
  context.model = &model;
  context.dataset = &info;
  context.class_weights = model.head->class_weights().detach().to(torch::kCPU, torch::kFloat32);
  context.geometry = model.backbone->geometry();
  context.image_height = info.height;
  context.image_width = info.width;
  context.feature_height = features.inputs().size(2);
  context.feature_width = features.inputs().size(3);
  context.device = device;
  Head* head = model.head.get();
  context.forward_images = [features_of = std::move(features_of), head](const torch::Tensor& images) {
    return head->forward(features_of(images).to(torch::kFloat32));
  };
  if (info.has_interventions) {
    context.intervene = [&dataset, split](const torch::Tensor& indices, const std::vector<Intervention>& interventions) {
      return dataset.get_intervened_batch(split, indices, interventions);
    };
  }
  return context;
}

namespace {

// One split through the model, batch by batch.
absl::Status walk_split(const EvalContext& context, const std::string& split, TensorSource& features,
                        Dataset& dataset, int64_t batch_size, const MetricNeeds& needs,
                        const std::vector<Metric*>& readers, Shard rows) {
  Model& model = *context.model;
  const int64_t n = rows.end;
  const int64_t steps = (rows.size() + batch_size - 1) / batch_size;
  Progress progress(fmt::format("evaluate {}", split), steps, "samples");
  for (int64_t step = 0; step < steps; ++step) {
    const int64_t begin = rows.begin + step * batch_size, end = std::min(n, begin + batch_size);
    const torch::Tensor indices = torch::arange(begin, end, torch::kInt64);
    const bool from_dataset = needs.parts || needs.images;
    if (from_dataset && step + 1 < steps) {
      dataset.prefetch(split, torch::arange(end, std::min(n, end + batch_size), torch::kInt64), /*augment=*/false);
    }
    EvalBatch batch;
    batch.split = split;
    batch.indices = indices.to(context.device);
    {
      torch::NoGradGuard no_grad;
      PQ_ASSIGN_OR_RETURN(Batch stored, features.get(indices));
      batch.features = stored.images.to(context.device);
      batch.labels = stored.labels.to(context.device);
      HeadOutput out = model.head->forward(batch.features);
      batch.logits = out.logits;
      batch.blackbox_logits = model.backbone->classify(batch.features);
      if (needs.similarity) {
        batch.presence = out.presence;
        batch.similarity = out.similarity;
      }
      if (needs.quantizer) {
        const torch::Tensor& f = batch.features;
        const torch::Tensor rows = f.permute({0, 2, 3, 1}).reshape({-1, f.size(1)});
        batch.codes = model.quantizer->encode(rows).view({f.size(0), f.size(2), f.size(3), -1});
      }
    }
    if (from_dataset) {
      PQ_ASSIGN_OR_RETURN(Batch data, dataset.get_eval_batch(split, indices));
      if (!data.labels.equal(batch.labels.cpu())) {
        return absl::InternalError(fmt::format("evaluate {}: the dataset's labels of samples {}..{} differ from the "
                                               "stored features' (a stale feature store?)",
                                               split, begin, end - 1));
      }
      if (needs.images) batch.images = data.images.to(context.device);
      if (needs.parts) {
        if (data.parts.defined()) batch.parts = data.parts.to(context.device);
        if (data.boxes.defined()) batch.boxes = data.boxes.to(context.device);
      }
    }
    for (Metric* metric : readers) PQ_RETURN_IF_ERROR(metric->update(batch));
    progress.step(end - begin);
  }
  progress.finish();
  return absl::OkStatus();
}

// A metric's partial state as bytes (a LibTorch archive of its tensors) and back.
std::string state_bytes(const Metric& metric) {
  const std::vector<torch::Tensor> state = metric.partial_state();
  torch::serialize::OutputArchive archive;
  archive.write("count", torch::tensor(static_cast<int64_t>(state.size())));
  for (size_t i = 0; i < state.size(); ++i) {
    if (state[i].defined()) archive.write(fmt::format("t{}", i), state[i].cpu());
  }
  std::ostringstream out;
  archive.save_to(out);
  return out.str();
}

absl::StatusOr<std::vector<torch::Tensor>> state_from_bytes(const std::string& bytes) {
  torch::serialize::InputArchive archive;
  archive.load_from(bytes.data(), bytes.size());
  torch::Tensor count;
  archive.read("count", count);
  std::vector<torch::Tensor> state(static_cast<size_t>(count.item<int64_t>()));
  for (size_t i = 0; i < state.size(); ++i) archive.try_read(fmt::format("t{}", i), state[i]);
  return state;
}

// Rank 0 merges every other rank's partial state into its metrics, in rank order.
absl::Status merge_ranks(const EvalContext& context, const std::vector<Metric*>& metrics,
                         const std::function<absl::StatusOr<std::shared_ptr<Metric>>(size_t)>& fresh_metric) {
  Collectives& group = collectives();
  for (size_t i = 0; i < metrics.size(); ++i) {
    const std::string mine = state_bytes(*metrics[i]);
    auto length = torch::tensor({static_cast<int64_t>(mine.size())}, torch::kInt64);
    const auto lengths = group.all_gather(length);
    int64_t longest = 0;
    for (const auto& l : lengths) longest = std::max(longest, l.item<int64_t>());
    auto padded = torch::zeros({longest}, torch::kUInt8);
    std::memcpy(padded.data_ptr(), mine.data(), mine.size());
    const auto all = group.all_gather(padded);
    if (group.rank() != 0) continue;
    for (int r = 1; r < group.world_size(); ++r) {
      const std::string bytes(static_cast<const char*>(all[r].data_ptr()), static_cast<size_t>(lengths[r].item<int64_t>()));
      PQ_ASSIGN_OR_RETURN(std::vector<torch::Tensor> state, state_from_bytes(bytes));
      PQ_ASSIGN_OR_RETURN(std::shared_ptr<Metric> other, fresh_metric(i));
      PQ_RETURN_IF_ERROR(other->begin(context));
      PQ_RETURN_IF_ERROR(other->load_partial_state(state));
      PQ_RETURN_IF_ERROR(metrics[i]->merge(*other));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status run_evaluation_pass(const EvalContext& context, const EvaluationSources& sources,
                                 const std::vector<Metric*>& metrics) {
  for (Metric* metric : metrics) PQ_RETURN_IF_ERROR(metric->begin(context));
  std::vector<Metric*> eval_readers, train_readers;
  for (Metric* metric : metrics) {
    if (metric->needs().eval_split) eval_readers.push_back(metric);
    if (metric->needs().train_split) train_readers.push_back(metric);
  }
  const bool sharded = sources.fresh_metric && collectives().world_size() > 1;
  auto walk = [&](const std::string& split, TensorSource& features, const std::vector<Metric*>& readers) {
    const Shard rows = sharded ? my_shard(features.size()) : Shard{0, features.size()};
    return guard(fmt::format("evaluating {}", split), [&] {
      return walk_split(context, split, features, *sources.dataset, sources.batch_size, combined_needs(readers),
                        readers, rows);
    });
  };
  if (!eval_readers.empty()) PQ_RETURN_IF_ERROR(walk(context.split, *sources.eval_features, eval_readers));
  if (!train_readers.empty()) {
    if (!sources.train_features) return absl::FailedPreconditionError("a metric reads the training split, which this pass has not");
    PQ_ASSIGN_OR_RETURN(TensorSource* train, sources.train_features());
    PQ_RETURN_IF_ERROR(walk(context.train_split, *train, train_readers));
  }
  if (sharded) {
    PQ_RETURN_IF_ERROR(guard("merging the ranks' metrics", [&] { return merge_ranks(context, metrics, sources.fresh_metric); }));
  }
  return absl::OkStatus();
}

}  // namespace protoquant

namespace protoquant {
namespace {

class InputDump : public Metric {
 public:
  explicit InputDump(const EvalDump& dump) : out_(dump) {}
  MetricNeeds needs() const override {
    MetricNeeds n;
    n.similarity = true;
    n.parts = parts_;
    return n;
  }
  absl::Status begin(const EvalContext& context) override {
    out_.set("class_weights", context.class_weights, "C x P non-negative class weights W (relu applied)");
    out_.set("prototypes", context.model->head->prototypes(), "P x d prototype vectors");
    out_.note("split", context.split);
    out_.note("image_size", {context.image_height, context.image_width});
    out_.note("feature_size", {context.feature_height, context.feature_width});
    out_.note("geometry", context.geometry.to_json());
    if (context.dataset) out_.note("part_names", context.dataset->part_names);
    return absl::OkStatus();
  }
  absl::Status update(const EvalBatch& b) override {
    out_.append("indices", b.indices, "N int64 sample index within the split");
    out_.append("labels", b.labels, "N int64 labels");
    out_.append("similarity", b.similarity, "N x P x h x w cosine similarity S of every prototype, feature resolution");
    out_.append("presence", b.presence, "N x P presence a = max_hw softmax_p(S / tau)");
    out_.append("logits", b.logits, "N x C logits of the interpretable model");
    if (b.parts.defined()) out_.append("parts", b.parts, "N x K x 3 part keypoints (x, y, visible) in input pixels");
    if (b.boxes.defined()) out_.append("boxes", b.boxes, "N x 4 object boxes (x0, y0, x1, y1) in input pixels");
    return absl::OkStatus();
  }
  absl::Status merge(const Metric&) override { return absl::UnimplementedError("the input dump does not merge"); }
  std::vector<torch::Tensor> partial_state() const override { return {}; }
  absl::Status load_partial_state(const std::vector<torch::Tensor>&) override {
    return absl::UnimplementedError("the input dump does not merge: --dump runs in one process");
  }
  absl::StatusOr<nlohmann::json> compute() override { return nlohmann::json::object(); }
  void set_parts(bool parts) { parts_ = parts; }

 private:
  EvalDump out_;
  bool parts_ = false;
};

}  // namespace

std::shared_ptr<Metric> make_input_dump(const EvalDump& dump, bool with_parts) {
  auto metric = std::make_shared<InputDump>(dump);
  metric->set_parts(with_parts);
  return metric;
}

}  // namespace protoquant
