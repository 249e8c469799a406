#include "protoquant/build_info.h"

namespace protoquant {

std::string toolkit_version() { return PROTOQUANT_VERSION; }
std::string toolkit_commit() { return PROTOQUANT_GIT_COMMIT; }

}  // namespace protoquant
