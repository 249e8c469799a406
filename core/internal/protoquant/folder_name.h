#pragma once
// Names that become one folder inside a folder the user chose (a run's name under --out, a sweep
// member's, an edit's under the run's edits/): they must not climb out of it or be absolute.

#include <string>

#include <absl/status/status.h>

namespace protoquant {

// OK when `name` is a single path component: not empty, not "." or "..", no '/' or '\0'.
// Otherwise InvalidArgument: "<what> '<name>' must be a single folder name ...".
absl::Status check_folder_name(const std::string& name, const std::string& what);

}  // namespace protoquant
