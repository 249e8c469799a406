#include "weights.h"

#include <fstream>
#include <iterator>
#include <vector>

#include <fmt/format.h>

#include "protoquant/status.h"

namespace protoquant::backbones {

namespace {

bool key_ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// BatchNorm's step counter: only read in training with momentum = None, never by eval-mode BN.
bool ignored_key(const std::string& key) { return key_ends_with(key, "num_batches_tracked"); }

std::string shape_string(const torch::Tensor& t) { return fmt::format("[{}]", fmt::join(t.sizes(), ", ")); }

}  // namespace

absl::StatusOr<StateDict> read_state_dict(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(fmt::format("{}: cannot open the weights file", path));
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  constexpr const char* kHint = "convert it with tools/export_backbone.py --from FILE";
  c10::IValue value;
  try {
    value = torch::pickle_load(bytes);
  } catch (const c10::Error& e) {
    // LibTorch 1.13's unpickler turns collections.OrderedDict into None and then trips over it.
    const std::string reason = first_line(e.what_without_backtrace());
    const bool ordered_dict = reason.find("Expected GenericDict but got None") != std::string::npos;
    return absl::InvalidArgumentError(fmt::format(
        "{}: expected a plain dict of tensors saved by torch.save, {} ({})", path,
        ordered_dict ? "found an OrderedDict (what model.state_dict() returns), which LibTorch 1.13 cannot read"
                     : fmt::format("cannot read it: {}", reason),
        kHint));
  }
  if (!value.isGenericDict()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: expected a plain dict of tensors saved by torch.save, found a {} ({})", path,
                    value.tagKind(), kHint));
  }
  StateDict result;
  for (const auto& item : value.toGenericDict()) {
    if (!item.key().isString()) return absl::InvalidArgumentError(fmt::format("{}: a key is not a string", path));
    const std::string& key = item.key().toStringRef();
    if (!item.value().isTensor()) {
      return absl::InvalidArgumentError(fmt::format("{}: '{}' is a {}, not a tensor", path, key, item.value().tagKind()));
    }
    result.emplace(key, item.value().toTensor());
  }
  return result;
}

absl::StatusOr<HeadPolicy> parse_head_policy(const std::string& text) {
  if (text == "load") return HeadPolicy::kLoad;
  if (text == "new") return HeadPolicy::kNew;
  if (text == "auto") return HeadPolicy::kAuto;
  return absl::InvalidArgumentError(fmt::format("head must be load, new or auto, not '{}'", text));
}

absl::StatusOr<LoadReport> load_state_dict(torch::nn::Module& module, const StateDict& weights,
                                           const std::string& path, const std::string& head_linear,
                                           HeadPolicy policy) {
  StateDict targets;
  for (const auto& item : module.named_parameters()) targets.emplace(item.key(), item.value());
  for (const auto& item : module.named_buffers()) targets.emplace(item.key(), item.value());

  // Every key on each side must exist on the other; reported one at a time, first in name order.
  for (const auto& [key, target] : targets) {
    if (!ignored_key(key) && weights.count(key) == 0) {
      return absl::InvalidArgumentError(fmt::format("{}: missing key '{}' (shape {})", path, key, shape_string(target)));
    }
  }
  for (const auto& [key, tensor] : weights) {
    if (!ignored_key(key) && targets.count(key) == 0) {
      return absl::InvalidArgumentError(fmt::format("{}: unexpected key '{}' (shape {})", path, key, shape_string(tensor)));
    }
  }

  LoadReport report;
  const std::string head_weight = head_linear + ".weight", head_bias = head_linear + ".bias";
  const auto checkpoint_head = weights.find(head_weight);
  if (checkpoint_head == weights.end()) {
    return absl::InvalidArgumentError(fmt::format("{}: missing key '{}'", path, head_weight));
  }
  report.checkpoint_classes = checkpoint_head->second.size(0);
  const int64_t model_classes = targets.at(head_weight).size(0);
  switch (policy) {
    case HeadPolicy::kLoad:
      if (report.checkpoint_classes != model_classes) {
        return absl::InvalidArgumentError(fmt::format(
            "{}: the checkpoint's head '{}' has {} classes but the dataset has {} (set head = \"new\" or \"auto\")",
            path, head_weight, report.checkpoint_classes, model_classes));
      }
      report.head_loaded = true;
      break;
    case HeadPolicy::kNew: report.head_loaded = false; break;
    case HeadPolicy::kAuto: report.head_loaded = report.checkpoint_classes == model_classes; break;
  }

  for (const auto& [key, target] : targets) {
    if (ignored_key(key)) continue;
    const bool is_head = key == head_weight || key == head_bias;
    if (is_head && !report.head_loaded) continue;
    const torch::Tensor& source = weights.at(key);
    if (source.sizes() != target.sizes()) {
      return absl::InvalidArgumentError(fmt::format("{}: key '{}' has shape {} but the model expects {}", path, key,
                                                    shape_string(source), shape_string(target)));
    }
    if (!source.is_floating_point() && target.is_floating_point()) {
      return absl::InvalidArgumentError(fmt::format("{}: key '{}' is not a floating-point tensor", path, key));
    }
  }
  torch::NoGradGuard no_grad;
  for (auto& [key, target] : targets) {
    if (ignored_key(key)) continue;
    const bool is_head = key == head_weight || key == head_bias;
    if (is_head && !report.head_loaded) continue;
    // copy_ keeps the target's dtype, device and memory format (channels-last stays channels-last).
    target.copy_(weights.at(key));
    ++report.tensors;
  }
  return report;
}

}  // namespace protoquant::backbones
