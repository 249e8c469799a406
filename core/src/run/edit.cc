#include "protoquant/edit.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "protoquant/atomic_file.h"
#include "protoquant/experiment_run.h"
#include "protoquant/folder_name.h"
#include "protoquant/manifest.h"
#include "protoquant/model_export.h"
#include "protoquant/model_size.h"
#include "protoquant/status.h"

namespace protoquant {
namespace fs = std::filesystem;

std::string EditOptions::default_name() const {
  std::vector<std::string> parts;
  for (int64_t p : disable_prototypes) parts.push_back(fmt::format("disable-{}", p));
  for (const auto& [c, p] : zero_weights) parts.push_back(fmt::format("zero-{}-{}", c, p));
  if (limit_k) parts.push_back(fmt::format("limit-k-{}", *limit_k));
  if (prune_inactive) parts.push_back(renormalize ? "prune-inactive-renormalized" : "prune-inactive");
  return fmt::format("{}", fmt::join(parts, "_"));
}

absl::StatusOr<std::pair<int64_t, int64_t>> parse_class_prototype(const std::string& text) {
  const auto colon = text.find(':');
  try {
    size_t used_c = 0, used_p = 0;
    if (colon == std::string::npos) throw std::invalid_argument(text);
    const int64_t c = std::stoll(text.substr(0, colon), &used_c);
    const int64_t p = std::stoll(text.substr(colon + 1), &used_p);
    if (used_c != colon || used_p != text.size() - colon - 1) throw std::invalid_argument(text);
    return std::make_pair(c, p);
  } catch (const std::exception&) {
    return absl::InvalidArgumentError(fmt::format("--zero-weight '{}': expected CLASS:PROTOTYPE, e.g. 3:17", text));
  }
}

namespace {

nlohmann::json describe(const ModelSize& size, double accuracy, int64_t prototypes) {
  return {{"accuracy", accuracy},
          {"local_size", size.local_size},
          {"global_size", size.global_size},
          {"weight_sparsity", size.sparsity},
          {"prototypes", prototypes}};
}

// Applies the edits on a copy of the run's model (the run is opened, never changed) and writes
// edits/<name>/.
absl::StatusOr<nlohmann::json> apply_edits(const fs::path& run_dir, const EditOptions& options, Registry& registry) {
  if (options.empty()) return absl::InvalidArgumentError("nothing to edit: give at least one edit option");
  if (options.limit_k && *options.limit_k < 1) return absl::InvalidArgumentError("--limit-k must be >= 1");
  const fs::path manifest = run_dir / "manifest.toml";
  if (!fs::exists(manifest)) {
    return absl::NotFoundError(fmt::format("{}: not a run folder (no manifest.toml)", run_dir.string()));
  }
  PQ_ASSIGN_OR_RETURN(const ExperimentSpec spec, load_experiment(manifest, {}, registry));
  ExperimentRun run(spec, registry, run_dir, RunMode::kOpen);
  PQ_RETURN_IF_ERROR(run.train_stages());
  Head& head = *run.model().head;
  PQ_ASSIGN_OR_RETURN(TensorSource* eval_features, run.eval_features());

  torch::NoGradGuard no_grad;
  auto weights = head.class_weights().detach().clone();
  const int64_t classes = weights.size(0), prototypes = weights.size(1);
  PQ_ASSIGN_OR_RETURN(const double accuracy_before, run.head_accuracy(*eval_features));
  nlohmann::json record;
  record["before"] = describe(model_size(weights), accuracy_before, prototypes);

  for (int64_t p : options.disable_prototypes) {
    if (p < 0 || p >= prototypes) {
      return absl::OutOfRangeError(fmt::format("--disable-prototype {}: the model has prototypes 0..{}", p, prototypes - 1));
    }
    weights.select(1, p).zero_();
  }
  for (const auto& [c, p] : options.zero_weights) {
    if (c < 0 || c >= classes || p < 0 || p >= prototypes) {
      return absl::OutOfRangeError(fmt::format("--zero-weight {}:{}: the model has classes 0..{} and prototypes 0..{}",
                                               c, p, classes - 1, prototypes - 1));
    }
    weights[c][p] = 0.0;
  }
  if (options.limit_k) weights = limit_k_weights(weights, *options.limit_k);
  PQ_RETURN_IF_ERROR(head.set_class_weights(weights.to(weights.device())));
  if (options.prune_inactive) {
    const auto keep = weights.gt(options.threshold).any(0).nonzero().squeeze(1).to(torch::kInt64).cpu();
    if (keep.numel() == 0) {
      return absl::FailedPreconditionError(fmt::format("--prune-inactive: no prototype has a weight above {}",
                                                       options.threshold));
    }
    PQ_RETURN_IF_ERROR(head.keep_prototypes(keep, !options.renormalize));
    record["kept_prototypes"] = std::vector<int64_t>(keep.data_ptr<int64_t>(), keep.data_ptr<int64_t>() + keep.numel());
  }
  PQ_ASSIGN_OR_RETURN(const double accuracy_after, run.head_accuracy(*eval_features));
  const auto edited = head.class_weights().detach();
  record["after"] = describe(model_size(edited), accuracy_after, edited.size(1));
  record["edits"] = {{"limit_k", options.limit_k ? nlohmann::json(*options.limit_k) : nlohmann::json()},
                     {"prune_inactive", options.prune_inactive},
                     {"threshold", options.threshold},
                     {"renormalize", options.renormalize},
                     {"disable_prototypes", options.disable_prototypes},
                     {"zero_weights", options.zero_weights}};
  record["split"] = spec.experiment.get_string("eval_split");

  const std::string name = options.name.empty() ? options.default_name() : options.name;
  const fs::path out = run_dir / "edits" / name;
  // An earlier edit of the same name stops counting as complete before anything is replaced.
  std::error_code ec;
  fs::remove(out / "edit.json", ec);
  PQ_RETURN_IF_ERROR(save_module(head, out / "head.pt"));
  PQ_RETURN_IF_ERROR(export_model(run.model(), spec.resolved, out / "protoquant.pt"));
  record["folder"] = fs::absolute(out).string();
  // edit.json last: its presence means the edit is complete.
  PQ_RETURN_IF_ERROR(write_file_atomic(out / "edit.json", record.dump(2) + "\n"));
  return record;
}

}  // namespace

torch::Tensor limit_k_weights(const torch::Tensor& weights, int64_t k) {
  if (k >= weights.size(1)) return weights;
  // A stable sort, not topk (whose order among ties is unspecified).
  const auto order = std::get<1>(weights.sort(/*stable=*/true, /*dim=*/1, /*descending=*/true));
  auto mask = torch::zeros_like(weights, torch::kBool);
  mask.scatter_(1, order.narrow(1, 0, k), true);
  return weights * mask;
}

absl::StatusOr<nlohmann::json> edit_run(const fs::path& run_dir, const EditOptions& options, Registry& registry) {
  // Checked before the run is opened: the edit's folder is edits/<name>/, inside the run.
  if (!options.name.empty()) PQ_RETURN_IF_ERROR(check_folder_name(options.name, "--name"));
  return guard(fmt::format("editing {}", run_dir.string()),
               [&]() -> absl::StatusOr<nlohmann::json> { return apply_edits(run_dir, options, registry); });
}

}  // namespace protoquant
