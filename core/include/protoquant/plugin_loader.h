// Loads plugin libraries into a Registry. Libraries are pinned for the life of the process:
// LibTorch's operator registry crashes if a library that registered with it is unloaded.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <absl/status/status.h>

#include "protoquant/registry.h"

namespace protoquant {

// Loads one library: checks both symbols and the ABI version, then registers its components.
// Loading the same file twice is a no-op.
absl::Status load_plugin(const std::filesystem::path& library, Registry& registry);

// Every *.so in `folder` (sorted, so registration order is reproducible).
absl::Status load_plugin_folder(const std::filesystem::path& folder, Registry& registry);

// The built-in plugin folder (<folder of libprotoquant_core.so>/protoquant/plugins)
// followed by the folders of PROTOQUANT_PLUGIN_PATH (colon-separated).
std::vector<std::filesystem::path> plugin_search_path();

// Loads every folder of plugin_search_path() that exists.
absl::Status load_default_plugins(Registry& registry);

}  // namespace protoquant
