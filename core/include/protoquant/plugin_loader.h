// Loads plugin libraries into a Registry. Libraries are pinned for the life of the process:
// LibTorch's operator registry crashes if a library that registered with it is unloaded.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <absl/status/status.h>

#include "protoquant/registry.h"

namespace protoquant {

// Loads one library: checks its symbols, the ABI version and the build record (plugin.h), then
// registers its components. Loading the same file twice is a no-op.
absl::Status load_plugin(const std::filesystem::path& library, Registry& registry);

// The first field (sdk, torch, compiler, cxx11_abi) in which a plugin's build record differs
// from the loader's, as ("torch 0.0.1", "uses torch 1.13.0"); nullopt when they agree.
std::optional<std::pair<std::string, std::string>> build_record_mismatch(const std::string& plugin,
                                                                         const std::string& loader);

// Every *.so in `folder` (sorted, so registration order is reproducible).
absl::Status load_plugin_folder(const std::filesystem::path& folder, Registry& registry);

// The built-in plugin folder (<folder of libprotoquant_core.so>/protoquant/plugins)
// followed by the folders of PROTOQUANT_PLUGIN_PATH (colon-separated).
std::vector<std::filesystem::path> plugin_search_path();

// Loads every folder of plugin_search_path() that exists.
absl::Status load_default_plugins(Registry& registry);

}  // namespace protoquant
