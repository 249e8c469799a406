// A plugin built against a different ABI version: the loader must refuse it.
#include "protoquant/plugin.h"

static absl::Status register_nothing(protoquant::Registry&) { return absl::OkStatus(); }

PROTOQUANT_PLUGIN_WITH_ABI(register_nothing, ::protoquant::kPluginAbiVersion + 41)
