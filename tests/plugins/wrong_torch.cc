// A plugin whose build record names another LibTorch: the loader must refuse it, naming both.
#include "protoquant/plugin.h"

static absl::Status register_nothing(protoquant::Registry&) { return absl::OkStatus(); }

PROTOQUANT_PLUGIN_WITH_RECORD(register_nothing, ::protoquant::kPluginAbiVersion,
                              "sdk=" PROTOQUANT_STRINGIFY(PROTOQUANT_SDK_VERSION) " torch=0.0.1 compiler=" PROTOQUANT_COMPILER
                              " cxx11_abi=" PROTOQUANT_CXX11_ABI)
