#include "protoquant/model_export.h"

#include <fstream>

#include <fmt/format.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include "protoquant/atomic_file.h"
#include "protoquant/status.h"

namespace protoquant {

absl::Status export_model(const Model& model, const nlohmann::json& config, const std::filesystem::path& path) {
  std::vector<char> bytes;
  PQ_RETURN_IF_ERROR(guard(fmt::format("exporting {}", path.string()), [&] {
    // torch::pickle_save writes the zip format of Python's torch.save.
    c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
    auto add_module = [&](const std::string& prefix, const torch::nn::Module& module) {
      for (const auto& item : module.named_parameters(true)) dict.insert(prefix + item.key(), item.value().detach().cpu());
      for (const auto& item : module.named_buffers(true)) dict.insert(prefix + item.key(), item.value().cpu());
    };
    if (model.backbone) add_module("backbone.", *model.backbone);
    if (model.quantizer) add_module("quantizer.", *model.quantizer);
    if (model.head) {
      add_module("head.", *model.head);
      dict.insert("head.class_weights", model.head->class_weights().detach().cpu().contiguous());
      dict.insert("head.prototypes", model.head->prototypes().detach().cpu().contiguous());
    }
    if (model.quantizer) dict.insert("prototype_groups", model.quantizer->subspaces());
    dict.insert("config", config.dump());
    bytes = torch::pickle_save(dict);
    return absl::OkStatus();
  }));
  return write_file_atomic(path, std::string(bytes.begin(), bytes.end()));
}

}  // namespace protoquant
