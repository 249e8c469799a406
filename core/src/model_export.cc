#include "protoquant/model_export.h"

#include <fstream>

#include <fmt/format.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include "protoquant/atomic_file.h"
#include "protoquant/status.h"

namespace protoquant {

absl::Status export_model(const Model& model, const nlohmann::json& config, const std::filesystem::path& path) {
  return write_atomic_with(path, [&](const std::filesystem::path& temporary) {
    return guard(fmt::format("exporting {}", path.string()), [&] {
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
      const std::vector<char> bytes = torch::pickle_save(dict);
      std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      out.close();
      if (!out) return absl::InternalError(fmt::format("{}: write failed", path.string()));
      return absl::OkStatus();
    });
  });
}

}  // namespace protoquant
