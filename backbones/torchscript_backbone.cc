#include "torchscript_backbone.h"

#include <cctype>
#include <cmath>
#include <filesystem>

#include <fmt/format.h>

#include "protoquant/status.h"

namespace protoquant::backbones {

namespace {

bool all_digits(const std::string& text) {
  if (text.empty()) return false;
  for (const char c : text) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

torch::Tensor element_as_tensor(const c10::IValue& value, const std::string& what) {
  TORCH_CHECK(value.isTensor(), "output ", what, " is a ", value.tagKind(), ", not a tensor");
  return value.toTensor();
}

torch::Tensor select_output(const c10::IValue& output, const std::string& which) {
  if (output.isTensor()) {
    TORCH_CHECK(which.empty() || which == "0", "the module returns one tensor; output = \"", which, "\" selects nothing");
    return output.toTensor();
  }
  if (output.isTuple() || output.isList()) {
    const std::vector<c10::IValue> items =
        output.isTuple() ? output.toTupleRef().elements().vec() : output.toListRef().vec();
    TORCH_CHECK(which.empty() || all_digits(which), "the module returns a ", output.tagKind(),
                ": output must be an index, not \"", which, "\"");
    const size_t index = which.empty() ? 0 : std::stoul(which);
    TORCH_CHECK(index < items.size(), "output ", index, " is out of range: the module returns ", items.size(), " values");
    return element_as_tensor(items[index], std::to_string(index));
  }
  if (output.isGenericDict()) {
    std::vector<std::string> keys;
    for (const auto& item : output.toGenericDict()) {
      if (!item.key().isString()) continue;
      if (item.key().toStringRef() == which) return element_as_tensor(item.value(), "'" + which + "'");
      keys.push_back(item.key().toStringRef());
    }
    TORCH_CHECK(false, "the module returns a dict; output = \"", which, "\" is not one of its keys: ",
                fmt::format("{}", fmt::join(keys, ", ")));
  }
  TORCH_CHECK(false, "the module returns a ", output.tagKind(), "; expected a tensor, tuple, list or dict");
  return {};
}

bool is_square(int64_t n) {
  const auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(n))));
  return n > 0 && side * side == n;
}

}  // namespace

torch::Tensor feature_map(const c10::IValue& output, const FeatureLayout& layout) {
  const torch::Tensor selected = select_output(output, layout.output);
  const bool grid_output = layout.tokens == "grid" || (layout.tokens == "auto" && selected.dim() == 4);
  if (grid_output) {
    TORCH_CHECK(selected.dim() == 4, "expected a B x D x H x W feature map, got shape ", selected.sizes());
    return selected;
  }
  TORCH_CHECK(selected.dim() == 3, "expected tokens B x N x D, got shape ", selected.sizes());
  const int64_t n = selected.size(1);
  bool drop = layout.cls_token == "drop";
  if (layout.cls_token == "auto") {
    drop = layout.grid.empty() ? (!is_square(n) && is_square(n - 1)) : n == layout.grid[0] * layout.grid[1] + 1;
  }
  const torch::Tensor tokens = drop ? selected.slice(1, 1) : selected;
  const int64_t cells = tokens.size(1);
  int64_t h = 0, w = 0;
  if (layout.grid.empty()) {
    TORCH_CHECK(is_square(cells), cells, " tokens", drop ? " (after dropping the CLS token)" : "",
                " do not form a square grid: set grid = [h, w] or cls_token");
    h = w = std::llround(std::sqrt(static_cast<double>(cells)));
  } else {
    h = layout.grid[0];
    w = layout.grid[1];
    TORCH_CHECK(h * w == cells, cells, " tokens", drop ? " (after dropping the CLS token)" : "", " do not fill grid ",
                h, " x ", w);
  }
  // Token t = i * w + j is cell (i, j) (row-major, as ViT patch embeddings flatten). The permute is
  // a view: the grid is channels-last and flattens back to (B*H*W) x D without a copy.
  return tokens.reshape({tokens.size(0), h, w, tokens.size(2)}).permute({0, 3, 1, 2});
}

TorchScriptBackbone::TorchScriptBackbone(torch::jit::Module module, FeatureLayout layout, int64_t channels,
                                         std::optional<torch::jit::Module> head, int64_t num_classes)
    : module_(std::move(module)), layout_(std::move(layout)), channels_(channels), head_(std::move(head)) {
  for (auto* scripted : {&module_, head_ ? &*head_ : nullptr}) {
    if (scripted == nullptr) continue;
    scripted->eval();
    for (auto p : scripted->parameters()) p.set_requires_grad(false);
  }
  if (!head_) fc_ = register_module("fc", torch::nn::Linear(channels_, num_classes));
}

torch::Tensor TorchScriptBackbone::features(const torch::Tensor& images) {
  return feature_map(module_.forward({images}), layout_);
}

torch::Tensor TorchScriptBackbone::classify(const torch::Tensor& features) {
  if (head_) return head_->forward({features}).toTensor();
  return fc_->forward(features.mean({2, 3}));
}

void TorchScriptBackbone::train(bool on) {
  Backbone::train(on);
  module_.eval();
  if (head_) head_->eval();
}

void TorchScriptBackbone::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  Backbone::to(device, dtype, non_blocking);
  module_.to(device, dtype, non_blocking);
  if (head_) head_->to(device, dtype, non_blocking);
}

void TorchScriptBackbone::to(torch::Dtype dtype, bool non_blocking) {
  Backbone::to(dtype, non_blocking);
  module_.to(dtype, non_blocking);
  if (head_) head_->to(dtype, non_blocking);
}

void TorchScriptBackbone::to(torch::Device device, bool non_blocking) {
  Backbone::to(device, non_blocking);
  module_.to(device, non_blocking);
  if (head_) head_->to(device, non_blocking);
}

ParamSchema torchscript_schema() {
  return ParamSchema{
      ParamSpec::Required("path", ParamType::kString, "the TorchScript file (torch.jit.save) mapping images to features")
          .path(),
      ParamSpec::String("output", "",
                        "which output is the feature map when the module returns a tuple/list (index) or a dict "
                        "(key); empty = the output itself, or its first element"),
      ParamSpec::String("tokens", "auto", "auto (3-D output = ViT tokens B x N x D, 4-D = grid), grid, or tokens")
          .one_of({"auto", "grid", "tokens"}),
      ParamSpec::String("cls_token", "auto",
                        "tokens only: drop the first token, keep it, or auto (drop when N is not a full grid and "
                        "N - 1 is)")
          .one_of({"auto", "drop", "keep"}),
      ParamSpec::IntList("grid", {}, "tokens only: the token grid [h, w]; empty = square").range(1, 1 << 20),
      ParamSpec::Int("channels", 0, "D, checked against the output; 0 = inferred from one dummy batch").range(0, 1 << 20),
      ParamSpec::String("head_path", "",
                        "a TorchScript head g (B x D x H x W -> B x classes), frozen; empty = a trainable "
                        "avgpool + linear head")
          .path(),
      ParamSpec::Int("stride", 0, "input pixels between feature cells; 0 = the image size over the feature map's").min(0),
      ParamSpec::Int("receptive_field", 0, "input pixels one feature cell sees; 0 = unknown").min(0),
      ParamSpec::Int("patch_size", 0, "a ViT's patch side in pixels; 0 = the stride for tokens, none for a grid").min(0),
      ParamSpec::FloatList("centre_offset", {},
                           "[x]: the input pixel on which cell 0's receptive field is centred (cell r's: x + r * "
                           "stride); [] = the patch's middle for tokens, unknown for a grid"),
  };
}

absl::StatusOr<std::shared_ptr<Backbone>> build_torchscript_backbone(const Params& params, const BuildContext& context) {
  const std::string& path = params.get_string("path");
  const std::string& head_path = params.get_string("head_path");
  if (context.num_classes < 1) return absl::InvalidArgumentError("torchscript needs a dataset with classes");
  if (context.image_channels < 1 || context.image_height < 1 || context.image_width < 1) {
    return absl::InvalidArgumentError("torchscript needs the dataset's image size for its dummy batch");
  }
  FeatureLayout layout{params.get_string("output"), params.get_string("tokens"), params.get_string("cls_token"),
                       params.get_int_list("grid")};
  if (!layout.grid.empty() && layout.grid.size() != 2) {
    return absl::InvalidArgumentError(fmt::format("{}: grid must be [h, w], got {} values", path, layout.grid.size()));
  }
  auto load = [](const std::string& file) -> absl::StatusOr<torch::jit::Module> {
    if (!std::filesystem::is_regular_file(file)) return absl::NotFoundError(fmt::format("{}: no such file", file));
    return guard(fmt::format("{}: cannot load the TorchScript module", file),
                 [&]() -> absl::StatusOr<torch::jit::Module> { return torch::jit::load(file, torch::kCPU); });
  };
  PQ_ASSIGN_OR_RETURN(torch::jit::Module module, load(path));
  std::optional<torch::jit::Module> head;
  if (!head_path.empty()) {
    PQ_ASSIGN_OR_RETURN(head, load(head_path));
  }

  // One dummy batch checks the layout now (a clear error at build time, not mid-run) and gives D.
  module.eval();
  bool probe_was_tokens = false;
  PQ_ASSIGN_OR_RETURN(const torch::Tensor probe,
                      guard(fmt::format("{}: dummy batch 1 x {} x {} x {}", path, context.image_channels,
                                        context.image_height, context.image_width),
                            [&]() -> absl::StatusOr<torch::Tensor> {
                              torch::NoGradGuard no_grad;
                              const auto images = torch::zeros(
                                  {1, context.image_channels, context.image_height, context.image_width});
                              const c10::IValue output = module.forward({images});
                              probe_was_tokens = select_output(output, layout.output).dim() == 3;
                              return feature_map(output, layout);
                            }));
  const int64_t channels = probe.size(1);
  if (params.get_int("channels") > 0 && params.get_int("channels") != channels) {
    return absl::InvalidArgumentError(fmt::format("{}: channels = {} but the feature map has D = {}", path,
                                                  params.get_int("channels"), channels));
  }
  if (head) {
    PQ_ASSIGN_OR_RETURN(const torch::Tensor logits,
                        guard(fmt::format("{}: running the head on a 1 x {} x {} x {} map", head_path, channels,
                                          probe.size(2), probe.size(3)),
                              [&]() -> absl::StatusOr<torch::Tensor> {
                                torch::NoGradGuard no_grad;
                                head->eval();
                                return head->forward({probe}).toTensor();
                              }));
    if (logits.dim() != 2 || logits.size(1) != context.num_classes) {
      return absl::InvalidArgumentError(fmt::format("{}: the head returns shape [{}], expected [1, {}] (the dataset's classes)",
                                                    head_path, fmt::join(logits.sizes(), ", "), context.num_classes));
    }
  }
  fmt::print(stderr, "[torchscript] {}: feature map D = {}, {} x {} for a {} x {} image; head: {}\n", path, channels,
             probe.size(2), probe.size(3), context.image_height, context.image_width,
             head ? head_path : std::string("trainable avgpool + linear"));
  // A scripted module cannot say its geometry: the manifest may, else the stride follows from
  // the dummy batch (rounded: a padded conv stem gives ceil-divided grids).
  BackboneGeometry geometry{params.get_int("stride"), params.get_int("receptive_field"), params.get_int("patch_size")};
  if (geometry.stride == 0) {
    geometry.stride = static_cast<int64_t>(std::lround(static_cast<double>(context.image_height) / probe.size(2)));
  }
  const bool tokens = layout.tokens == "tokens" || (layout.tokens == "auto" && probe_was_tokens);
  if (geometry.patch_size == 0 && tokens) geometry.patch_size = geometry.stride;
  const std::vector<double> centre = params.get_float_list("centre_offset");
  if (centre.size() > 1) {
    return absl::InvalidArgumentError(
        fmt::format("{}: centre_offset takes one number (cell 0's receptive-field centre), got {}", path, centre.size()));
  }
  if (!centre.empty()) geometry.centre_offset = centre.front();
  // A token sees its patch first: centred on the patch's middle pixel.
  if (centre.empty() && geometry.patch_size > 0) {
    geometry.centre_offset = static_cast<double>(geometry.patch_size - 1) / 2.0;
  }
  auto backbone = std::make_shared<TorchScriptBackbone>(std::move(module), std::move(layout), channels, std::move(head),
                                                        context.num_classes);
  backbone->set_geometry(geometry);
  return backbone;
}

}  // namespace protoquant::backbones
