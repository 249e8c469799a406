// One registry per component kind (backbone, quantizer, head, dataset, metric). An entry is a
// name, a one-line summary, a parameter schema and a factory; plugins fill the registries from
// their registration function (protoquant/plugin.h). Role models: timm's create_model,
// mmengine's Registry.build, detectron2's small registry.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <absl/status/status.h>
#include <absl/status/statusor.h>
#include <fmt/format.h>

#include "protoquant/backbone.h"
#include "protoquant/build_context.h"
#include "protoquant/dataset.h"
#include "protoquant/head.h"
#include "protoquant/metric.h"
#include "protoquant/params.h"
#include "protoquant/quantizer.h"
#include "protoquant/status.h"

namespace protoquant {

template <class T>
class ComponentRegistry {
 public:
  using Factory = std::function<absl::StatusOr<std::shared_ptr<T>>(const Params&, const BuildContext&)>;

  struct Entry {
    std::string name;
    std::string summary;
    ParamSchema schema;
    Factory factory;
    std::string library;  // filled in by the registry: the plugin file that registered it
  };

  ComponentRegistry(std::string kind, const std::string* current_library)
      : kind_(std::move(kind)), current_library_(current_library) {}

  const std::string& kind() const { return kind_; }

  absl::Status add(Entry entry) {
    if (entry.name.empty()) return absl::InvalidArgumentError(fmt::format("a {} needs a name", kind_));
    if (!entry.factory) return absl::InvalidArgumentError(fmt::format("{} '{}' has no factory", kind_, entry.name));
    entry.library = current_library_ ? *current_library_ : std::string();
    auto found = entries_.find(entry.name);
    if (found != entries_.end()) {
      return absl::AlreadyExistsError(fmt::format("{} '{}' registered twice: by {} and by {}", kind_, entry.name,
                                                  found->second.library, entry.library));
    }
    entries_.emplace(entry.name, std::move(entry));
    return absl::OkStatus();
  }

  const Entry* find(const std::string& name) const {
    auto it = entries_.find(name);
    return it == entries_.end() ? nullptr : &it->second;
  }

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [name, entry] : entries_) out.push_back(name);
    return out;
  }

  const std::map<std::string, Entry>& entries() const { return entries_; }

  // Builds `name` with `params`, checked against its schema first. Exceptions thrown while
  // constructing become a Status naming the component.
  absl::StatusOr<std::shared_ptr<T>> build(const std::string& name, const Params& params,
                                           const BuildContext& context) const {
    const Entry* entry = find(name);
    if (entry == nullptr) {
      const std::string hint = closest_match(name, names());
      return absl::NotFoundError(fmt::format("unknown {} type '{}'{}", kind_, name,
                                             hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint)));
    }
    // The schema holds even for callers that skip the manifest (tests, check-plugin, other
    // tools): a factory never sees a value its schema refuses.
    for (const auto& spec : entry->schema.specs()) {
      if (auto it = params.values().find(spec.name); it != params.values().end()) {
        if (const std::string problem = spec.check(it->second); !problem.empty()) {
          return absl::InvalidArgumentError(fmt::format("{} '{}': {}", kind_, name, problem));
        }
      }
    }
    return guard(fmt::format("building {} '{}'", kind_, name),
                 [&]() -> absl::StatusOr<std::shared_ptr<T>> { return entry->factory(params, context); });
  }

 private:
  std::string kind_;
  const std::string* current_library_;
  std::map<std::string, Entry> entries_;
};

class Registry {
 public:
  Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  ComponentRegistry<Backbone> backbones{"backbone", &current_library_};
  ComponentRegistry<Quantizer> quantizers{"quantizer", &current_library_};
  ComponentRegistry<Head> heads{"head", &current_library_};
  ComponentRegistry<Dataset> datasets{"dataset", &current_library_};
  ComponentRegistry<Metric> metrics{"metric", &current_library_};

  // The kinds in the order a manifest uses them.
  static const std::vector<std::string>& kinds();

  // Name, summary, schema and library of one entry of any kind, for `describe` and validation.
  struct EntryView {
    std::string kind;
    std::string name;
    std::string summary;
    const ParamSchema* schema = nullptr;
    std::string library;
  };
  std::vector<EntryView> entries(const std::string& kind) const;
  std::vector<EntryView> find_any(const std::string& name) const;  // all kinds with that name
  const ParamSchema* schema(const std::string& kind, const std::string& name) const;
  std::vector<std::string> names(const std::string& kind) const;

  // Set by the plugin loader while a library registers, so entries know where they came from.
  void set_current_library(std::string path) { current_library_ = std::move(path); }

  // The canonical paths of the libraries that registered into this registry. The registry keeps
  // them itself: a record kept elsewhere by its address would make a new registry allocated where
  // a freed one was skip the plugins the old one had loaded.
  bool has_loaded(const std::string& library) const { return loaded_libraries_.count(library) > 0; }
  void mark_loaded(std::string library) { loaded_libraries_.insert(std::move(library)); }

 private:
  std::string current_library_;
  std::set<std::string> loaded_libraries_;
};

}  // namespace protoquant
