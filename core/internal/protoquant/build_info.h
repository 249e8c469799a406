// Which toolkit a result came from: recorded in every results.json and results-store row.
#pragma once

#include <string>

namespace protoquant {

std::string toolkit_version();  // the CMake project version, e.g. "0.1.0"
// The git commit the build was configured from ("-dirty" when the tree had changes then), or
// "unknown" outside a git checkout. CMake re-reads it after every commit (.git/logs/HEAD).
std::string toolkit_commit();

}  // namespace protoquant
