// The plugin boundary. A plugin library exports three symbols through Boost.DLL aliases:
//   protoquant_abi_version  : uint32_t()        -- must equal kPluginAbiVersion of the loader
//   protoquant_build_record : const char*()     -- what it was built against (below); the
//                                                  loader refuses a mismatch, naming both
//   protoquant_register     : absl::Status(Registry&) noexcept
// Write `PROTOQUANT_PLUGIN(my_register_function)` once in a plugin's sources. No static
// self-registration (its order across libraries is fragile and linkers drop it), and no
// exception crosses the boundary: the macro turns any exception into a Status.
//
// The SDK version (PROTOQUANT_SDK_VERSION, = kPluginAbiVersion, the core library's SOVERSION)
// is bumped by one whenever a public header (core/include/protoquant) changes in a way that a
// plugin built against the old headers could misbehave with: a virtual added, removed or
// reordered, a signature changed, a struct's members changed, a contract's meaning changed.
// Adding a free function or a comment does not bump it. The history is kept below.
#pragma once

#include <cstdint>
#include <exception>

#ifndef BOOST_DLL_USE_STD_FS
#define BOOST_DLL_USE_STD_FS
#endif
#include <boost/dll/alias.hpp>
#include <torch/version.h>

#include "protoquant/registry.h"

namespace protoquant {

// 11: Dataset::get_intervened_batch; 10: BackboneGeometry::centre_offset; 9: collectives (data-parallel), Metric::partial_state, CodebookUsage::counts;
// 8: Dataset::load_image, the build record, Metric's require_parts; 7: DatasetInfo mean/std;
// 6: streaming Metric; 5: Backbone::geometry; 4: Registry's loaded-library set;
// 3: Head::reads_16bit_features; 2: keep_codes, Head editing.
#define PROTOQUANT_SDK_VERSION 11
inline constexpr uint32_t kPluginAbiVersion = PROTOQUANT_SDK_VERSION;

using PluginAbiVersionFn = uint32_t();
using PluginBuildRecordFn = const char*();
using PluginRegisterFn = absl::Status(Registry&);

}  // namespace protoquant

#define PROTOQUANT_STRINGIFY_(x) #x
#define PROTOQUANT_STRINGIFY(x) PROTOQUANT_STRINGIFY_(x)
#if defined(__clang__)
#define PROTOQUANT_COMPILER "clang-" PROTOQUANT_STRINGIFY(__clang_major__)
#elif defined(__GNUC__)
#define PROTOQUANT_COMPILER "gcc-" PROTOQUANT_STRINGIFY(__GNUC__)
#else
#define PROTOQUANT_COMPILER "unknown"
#endif
#if defined(_GLIBCXX_USE_CXX11_ABI)
#define PROTOQUANT_CXX11_ABI PROTOQUANT_STRINGIFY(_GLIBCXX_USE_CXX11_ABI)
#else
#define PROTOQUANT_CXX11_ABI "none"
#endif
// What this translation unit is built against, in the loader's words: "sdk=8 torch=1.13.0
// compiler=gcc-12 cxx11_abi=1". The compiler counts by major version (its C++ ABI is stable
// within one), the standard library by its dual ABI (std::string's layout).
#define PROTOQUANT_BUILD_RECORD                                                                      \
  "sdk=" PROTOQUANT_STRINGIFY(PROTOQUANT_SDK_VERSION) " torch=" PROTOQUANT_STRINGIFY(TORCH_VERSION_MAJOR) "." \
      PROTOQUANT_STRINGIFY(TORCH_VERSION_MINOR) "." PROTOQUANT_STRINGIFY(TORCH_VERSION_PATCH) " compiler=" PROTOQUANT_COMPILER \
      " cxx11_abi=" PROTOQUANT_CXX11_ABI

// The general form, for the loader's tests (a plugin that claims another ABI or build).
#define PROTOQUANT_PLUGIN_WITH_RECORD(register_function, abi, record)                          \
  namespace protoquant_plugin_exports {                                                        \
  namespace { /* internal linkage: each plugin keeps its own entry points */                   \
  uint32_t abi_version() { return (abi); }                                                     \
  const char* build_record() { return (record); }                                              \
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
  BOOST_DLL_ALIAS(protoquant_plugin_exports::build_record, protoquant_build_record)            \
  BOOST_DLL_ALIAS(protoquant_plugin_exports::register_components, protoquant_register)

#define PROTOQUANT_PLUGIN_WITH_ABI(register_function, abi) \
  PROTOQUANT_PLUGIN_WITH_RECORD(register_function, abi, PROTOQUANT_BUILD_RECORD)

#define PROTOQUANT_PLUGIN(register_function) \
  PROTOQUANT_PLUGIN_WITH_ABI(register_function, ::protoquant::kPluginAbiVersion)
