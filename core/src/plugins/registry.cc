#include "protoquant/registry.h"

namespace protoquant {

Registry::Registry() = default;

const std::vector<std::string>& Registry::kinds() {
  static const std::vector<std::string> kinds = {"dataset", "backbone", "quantizer", "head", "metric"};
  return kinds;
}

namespace {
template <class T>
void collect(const ComponentRegistry<T>& registry, std::vector<Registry::EntryView>& out) {
  for (const auto& [name, entry] : registry.entries()) {
    out.push_back({registry.kind(), name, entry.summary, &entry.schema, entry.library});
  }
}
}  // namespace

std::vector<Registry::EntryView> Registry::entries(const std::string& kind) const {
  std::vector<EntryView> out;
  if (kind == "backbone") collect(backbones, out);
  if (kind == "quantizer") collect(quantizers, out);
  if (kind == "head") collect(heads, out);
  if (kind == "dataset") collect(datasets, out);
  if (kind == "metric") collect(metrics, out);
  return out;
}

std::vector<Registry::EntryView> Registry::find_any(const std::string& name) const {
  std::vector<EntryView> out;
  for (const auto& kind : kinds()) {
    for (auto& view : entries(kind)) if (view.name == name) out.push_back(view);
  }
  return out;
}

const ParamSchema* Registry::schema(const std::string& kind, const std::string& name) const {
  for (const auto& view : entries(kind)) if (view.name == name) return view.schema;
  return nullptr;
}

std::vector<std::string> Registry::names(const std::string& kind) const {
  std::vector<std::string> out;
  for (const auto& view : entries(kind)) out.push_back(view.name);
  return out;
}

}  // namespace protoquant
