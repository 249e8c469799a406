// The frozen backbone's feature maps of each split: a function of the black box, the data and
// the dtype. Not filed as a whole: a split's features are computed when a stage that reads them
// is computed (never for a run that reuses every stage), and filed per split by the feature
// cache when experiment.store_features is set.
#include <optional>

#include <fmt/format.h>

#include <ATen/CPUGeneratorImpl.h>

#include "protoquant/batch_norm.h"
#include "protoquant/checkpoint.h"
#include "protoquant/digest.h"
#include "protoquant/feature_cache.h"
#include "protoquant/process_group.h"
#include "protoquant/status.h"
#include "stages/run_state.h"
#include "stages/stages.h"

namespace protoquant {

namespace {

class FeaturesStage : public Stage {
 public:
  std::string name() const override { return "features"; }
  bool filed() const override { return false; }
  absl::StatusOr<nlohmann::json> key_inputs(const RunState& run) const override {
    nlohmann::json inputs = {{"blackbox", run.keys.at("blackbox").key},
                          {"dataset", run.dataset_identity()},
                          {"dtype", run.spec.experiment.get_string("feature_dtype")}};
    // The black box's key holds its precision only when it was trained; extraction runs at it
    // either way. Only when not fp32, so that fp32 keys stay what they were.
    if (run.backbone_precision != Precision::kFp32) inputs["precision"] = precision_name(run.backbone_precision);
    return inputs;
  }
  absl::StatusOr<nlohmann::json> compute(RunState& run) override {
    PQ_RETURN_IF_ERROR(run.read_training_features());
    return run.results["stages"]["features"];
  }
};

}  // namespace

std::unique_ptr<Stage> features_stage() { return std::make_unique<FeaturesStage>(); }

absl::StatusOr<std::unique_ptr<TensorSource>> RunState::extract(const std::string& split) {
  const Params& exp = spec.experiment;
  const int64_t batch_size = spec.stages.at("blackbox").get_int("eval_batch_size");
  const auto dtype = feature_dtype(exp.get_string("feature_dtype"));
  std::optional<FeatureCache> cache;
  if (exp.get_bool("store_features") && !opening()) cache.emplace(store.features_folder());
  // One entry per (features key, split).
  const std::string key = opening() ? "" : sha256_hex(keys.at("features").key + "|" + split);
  nlohmann::json& record = results["stages"]["features"];
  const auto start = Clock::now();
  if (cache) {
    // Data-parallel: rank 0's answer, so that every rank extracts or none does.
    std::optional<CachedFeatures> hit;
    if (is_writer()) hit = cache->load(key);
    if (rank0_decides(hit.has_value())) {
      if (!hit) hit = cache->load(key);
      if (!hit) {
        return absl::InternalError(fmt::format("rank {}: cannot read the feature cache entry rank 0 read: {}",
                                               collectives().rank(), cache->path_for(key).string()));
      }
      if (is_writer()) fmt::print(stderr, "[features] {}: from the store ({})\n", split, cache->path_for(key).string());
      record["cache"][split] = {{"hit", true}, {"file", cache->path_for(key).string()}};
      record["splits"][split] = {{"from", "cache"}, {"seconds", seconds_since(start)}};
      record["seconds"] = record.value("seconds", 0.0) + seconds_since(start);
      return std::make_unique<TensorSource>(hit->features, hit->labels);
    }
  }
  DatasetSource source(*dataset, split, /*augment=*/false);  // features of un-augmented images
  PQ_ASSIGN_OR_RETURN(const ImageFeatures features_of, image_features());
  // Data-parallel: each rank extracts its share of the split; every rank gets the whole.
  std::vector<torch::Tensor> label_parts;
  PQ_ASSIGN_OR_RETURN(torch::Tensor features,
                      map_batches_sharded(source, batch_size, context.device,
                                          [&](const Batch& batch) {
                                            label_parts.push_back(batch.labels);
                                            return features_of(batch.images).to(dtype);
                                          },
                                          fmt::format("features {}", split)));
  torch::Tensor labels = torch::cat(label_parts);
  if (labels.size(0) != features.size(0)) labels = gather_rows(labels, features.size(0));
  record["splits"][split] = {{"from", "backbone"}, {"seconds", seconds_since(start)}};
  record["seconds"] = record.value("seconds", 0.0) + seconds_since(start);
  if (cache && is_writer()) {
    PQ_RETURN_IF_ERROR(cache->store(key, features, labels));
    record["cache"][split] = {{"hit", false}, {"file", cache->path_for(key).string()}};
  }
  record["shape"] = std::vector<int64_t>(features.sizes().begin() + 1, features.sizes().end());
  record["dtype"] = exp.get_string("feature_dtype");
  record["backbone_precision"] = precision_name(backbone_precision);
  record["batch_norm_folded"] = image_backbone_ == model.backbone ? 0 : foldable_batch_norms(*model.backbone);
  record["bytes_per_image"] = features.numel() / std::max<int64_t>(1, features.size(0)) * features.element_size();
  return std::make_unique<TensorSource>(features, labels);
}

absl::StatusOr<ImageFeatures> RunState::image_features() {
  if (image_backbone_of_ != model.backbone.get()) {
    image_backbone_of_ = model.backbone.get();
    image_backbone_ = model.backbone;
    if (foldable_batch_norms(*model.backbone) > 0) {
      PQ_ASSIGN_OR_RETURN(auto folded, folded_backbone());
      if (folded) image_backbone_ = folded;
    }
  }
  return ImageFeatures([backbone = image_backbone_, precision = backbone_precision,
                        device = context.device](const torch::Tensor& images) {
    AutocastScope autocast(precision, device);
    return backbone->features(images);
  });
}

absl::StatusOr<std::shared_ptr<Backbone>> RunState::folded_backbone() {
  Backbone& original = *model.backbone;
  original.eval();
  // A second instance, built as stage 0 builds it, without drawing from the global generator (the
  // stages' random streams stay what they were), then given the original's state.
  std::shared_ptr<Backbone> copy;
  {
    auto generator = at::detail::getDefaultCPUGenerator();
    const auto state = generator.get_state();
    auto built = registry.backbones.build(spec.backbone.type, spec.backbone.params, context);
    generator.set_state(state);
    PQ_RETURN_IF_ERROR(built.status());
    copy = *built;
  }
  PQ_RETURN_IF_ERROR(guard("folding batch norm: copying the backbone", [&] {
    restore_state(*copy, snapshot_state(original));  // the same construction: the same tensors in order
    return absl::OkStatus();
  }));
  torch::NoGradGuard no_grad;
  copy->to(context.device);
  freeze(*copy);
  const int folded = fold_batch_norm(*copy);
  // The pairs are found by registration order, not by the forward pass: the copy is used only if
  // it computes what the backbone computes (fp32, a seeded batch of two images).
  auto probe_generator = at::detail::createCPUGenerator(0);
  const auto probe = torch::randn({2, context.image_channels, context.image_height, context.image_width},
                                  probe_generator, torch::kFloat32).to(context.device);
  const auto expected = original.features(probe), actual = copy->features(probe);
  const double error = ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item<double>();
  if (!(error <= 1e-4)) {
    if (is_writer()) {
      fmt::print(stderr, "[features] folding {} batch norms into their convolutions changed the backbone's features "
                         "({:.1e} of their largest magnitude); extracting without folding\n", folded, error);
    }
    return std::shared_ptr<Backbone>();
  }
  return copy;
}

absl::Status RunState::read_training_features() {
  PQ_RETURN_IF_ERROR(train_features().status());
  PQ_RETURN_IF_ERROR(validation_features().status());
  return eval_features().status();  // the codebook's usage is measured on it
}

absl::StatusOr<TensorSource*> RunState::train_features() {
  if (!train_features_) {
    PQ_ASSIGN_OR_RETURN(train_features_, extract(train_split));
  }
  return train_features_.get();
}

absl::StatusOr<TensorSource*> RunState::eval_features() {
  if (!eval_features_) {
    PQ_ASSIGN_OR_RETURN(eval_features_, extract(eval_split));
  }
  return eval_features_.get();
}

absl::StatusOr<TensorSource*> RunState::validation_features() {
  if (validation_split == eval_split) return eval_features();
  if (!separate_validation_features_) {
    PQ_ASSIGN_OR_RETURN(separate_validation_features_, extract(validation_split));
  }
  return separate_validation_features_.get();
}

}  // namespace protoquant
