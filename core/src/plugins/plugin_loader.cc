#include "protoquant/plugin_loader.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <sstream>

#ifndef BOOST_DLL_USE_STD_FS
#define BOOST_DLL_USE_STD_FS
#endif
#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>
#include <fmt/format.h>

#include "protoquant/plugin.h"

namespace protoquant {
namespace fs = std::filesystem;

namespace {

// Pinned for the life of the process: never unloaded (see the header).
std::vector<boost::dll::shared_library>& pinned_libraries() {
  static auto* libraries = new std::vector<boost::dll::shared_library>();
  return *libraries;
}

}  // namespace

std::optional<std::pair<std::string, std::string>> build_record_mismatch(const std::string& plugin,
                                                                         const std::string& loader) {
  auto parse = [](const std::string& record) {
    std::map<std::string, std::string> fields;
    std::istringstream words(record);
    for (std::string word; words >> word;) {
      const size_t eq = word.find('=');
      if (eq != std::string::npos) fields[word.substr(0, eq)] = word.substr(eq + 1);
    }
    return fields;
  };
  const auto theirs = parse(plugin), ours = parse(loader);
  for (const auto& [key, value] : ours) {
    const auto it = theirs.find(key);
    const std::string their_value = it == theirs.end() ? "(none)" : it->second;
    if (their_value != value) return std::make_pair(key + " " + their_value, "uses " + key + " " + value);
  }
  return std::nullopt;
}

absl::Status load_plugin(const fs::path& library, Registry& registry) {
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);

  std::error_code ec;
  const fs::path path = fs::weakly_canonical(library, ec);
  if (!fs::is_regular_file(path)) {
    return absl::NotFoundError(fmt::format("{}: plugin library not found", library.string()));
  }
  if (registry.has_loaded(path.string())) return absl::OkStatus();

  boost::dll::shared_library lib;
  boost::dll::fs::error_code load_error;
  // RTLD_LOCAL: a plugin's symbols stay its own (two plugins may use the same internal names);
  // the core and LibTorch are shared anyway, as libraries every plugin links against.
  lib.load(path, boost::dll::load_mode::rtld_local | boost::dll::load_mode::rtld_now, load_error);
  if (load_error) {
    // Boost.DLL reports every dlopen failure as "Bad file descriptor"; the loader's own words
    // (an executable, a missing dependency, not an ELF file) are what a user can act on.
    std::string why = load_error.message();
    if (void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL)) {
      ::dlclose(handle);
    } else if (const char* text = ::dlerror()) {
      why = text;
    }
    return absl::InvalidArgumentError(fmt::format("{}: cannot load plugin: {}", path.string(), why));
  }
  for (const char* symbol : {"protoquant_abi_version", "protoquant_build_record", "protoquant_register"}) {
    if (!lib.has(symbol)) {
      pinned_libraries().push_back(std::move(lib));
      return absl::InvalidArgumentError(
          fmt::format("{}: not a ProtoQuant plugin: missing symbol '{}' (use PROTOQUANT_PLUGIN)", path.string(), symbol));
    }
  }
  const uint32_t abi = lib.get_alias<PluginAbiVersionFn>("protoquant_abi_version")();
  if (abi != kPluginAbiVersion) {
    pinned_libraries().push_back(std::move(lib));
    return absl::FailedPreconditionError(fmt::format(
        "{}: plugin ABI version {} does not match this ProtoQuant's {}; rebuild the plugin against this SDK",
        path.string(), abi, kPluginAbiVersion));
  }
  const std::string record = lib.get_alias<PluginBuildRecordFn>("protoquant_build_record")();
  if (auto mismatch = build_record_mismatch(record, PROTOQUANT_BUILD_RECORD)) {
    pinned_libraries().push_back(std::move(lib));
    return absl::FailedPreconditionError(
        fmt::format("{}: built against {}, this ProtoQuant {}; rebuild the plugin against this SDK", path.string(),
                    mismatch->first, mismatch->second));
  }
  auto& register_components = lib.get_alias<PluginRegisterFn>("protoquant_register");
  registry.set_current_library(path.string());
  const absl::Status status = register_components(registry);
  registry.set_current_library("");
  pinned_libraries().push_back(std::move(lib));
  if (!status.ok()) return annotate(status, path.string());
  registry.mark_loaded(path.string());
  return absl::OkStatus();
}

absl::Status load_plugin_folder(const fs::path& folder, Registry& registry) {
  std::error_code ec;
  std::vector<fs::path> libraries;
  for (const auto& entry : fs::directory_iterator(folder, ec)) {
    if (entry.is_regular_file() && entry.path().extension() == ".so") libraries.push_back(entry.path());
  }
  if (ec) return absl::NotFoundError(fmt::format("{}: cannot list plugin folder: {}", folder.string(), ec.message()));
  std::sort(libraries.begin(), libraries.end());
  for (const auto& library : libraries) PQ_RETURN_IF_ERROR(load_plugin(library, registry));
  return absl::OkStatus();
}

std::vector<fs::path> plugin_search_path() {
  std::vector<fs::path> folders;
  // The core library sits in <prefix>/lib, its plugins in <prefix>/lib/protoquant/plugins, in the
  // build tree and after installation alike.
  const fs::path core = boost::dll::this_line_location();
  folders.push_back(core.parent_path() / "protoquant" / "plugins");
  if (const char* extra = std::getenv("PROTOQUANT_PLUGIN_PATH")) {
    std::string list = extra;
    size_t start = 0;
    while (start <= list.size()) {
      const size_t end = std::min(list.find(':', start), list.size());
      if (end > start) folders.emplace_back(list.substr(start, end - start));
      start = end + 1;
    }
  }
  return folders;
}

absl::Status load_default_plugins(Registry& registry) {
  for (const auto& folder : plugin_search_path()) {
    if (fs::is_directory(folder)) PQ_RETURN_IF_ERROR(load_plugin_folder(folder, registry));
  }
  return absl::OkStatus();
}

}  // namespace protoquant
