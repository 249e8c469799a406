// The plugin boundary. A plugin library exports exactly two symbols through Boost.DLL aliases:
//   protoquant_abi_version : uint32_t()        -- must equal kPluginAbiVersion of the loader
//   protoquant_register    : absl::Status(Registry&) noexcept
// Write `PROTOQUANT_PLUGIN(my_register_function)` once in a plugin's sources. No static
// self-registration (its order across libraries is fragile and linkers drop it), and no
// exception crosses the boundary: the macro turns any exception into a Status.
#pragma once

#include <cstdint>
#include <exception>

#ifndef BOOST_DLL_USE_STD_FS
#define BOOST_DLL_USE_STD_FS
#endif
#include <boost/dll/alias.hpp>

#include "protoquant/registry.h"

namespace protoquant {

// Bump when any interface in include/protoquant changes layout or meaning.
inline constexpr uint32_t kPluginAbiVersion = 8;  // 8: Dataset::load_image; 7: DatasetInfo mean/std; 6: streaming Metric; 5: Backbone::geometry; 4: Registry's loaded-library set; 3: Head::reads_16bit_features; 2: keep_codes, Head editing

using PluginAbiVersionFn = uint32_t();
using PluginRegisterFn = absl::Status(Registry&);

}  // namespace protoquant

#define PROTOQUANT_PLUGIN_WITH_ABI(register_function, abi)                                     \
  namespace protoquant_plugin_exports {                                                        \
  namespace { /* internal linkage: each plugin keeps its own entry points */                   \
  uint32_t abi_version() { return (abi); }                                                     \
  absl::Status register_components(::protoquant::Registry& registry) noexcept {                \
    try {                                                                                      \
      return register_function(registry);                                                      \
    } catch (const std::exception& e) {                                                        \
      return absl::InternalError(std::string("plugin registration failed: ") + e.what());      \
    } catch (...) {                                                                            \
      return absl::InternalError("plugin registration failed with an unknown exception");      \
    }                                                                                          \
  }                                                                                            \
  }                                                                                            \
  }                                                                                            \
  BOOST_DLL_ALIAS(protoquant_plugin_exports::abi_version, protoquant_abi_version)              \
  BOOST_DLL_ALIAS(protoquant_plugin_exports::register_components, protoquant_register)

#define PROTOQUANT_PLUGIN(register_function) \
  PROTOQUANT_PLUGIN_WITH_ABI(register_function, ::protoquant::kPluginAbiVersion)
