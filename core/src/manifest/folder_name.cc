#include "protoquant/folder_name.h"

#include <fmt/format.h>

namespace protoquant {

absl::Status check_folder_name(const std::string& name, const std::string& what) {
  const char* problem = nullptr;
  if (name.empty()) problem = "is empty";
  else if (name == "." || name == "..") problem = "names the folder itself or its parent";
  else if (name.find('/') != std::string::npos) problem = "contains '/'";
  else if (name.find('\0') != std::string::npos) problem = "contains a NUL byte";
  if (problem == nullptr) return absl::OkStatus();
  return absl::InvalidArgumentError(
      fmt::format("{} '{}' {}: it must be a single folder name, which stays inside the output folder", what,
                  name.find('\0') == std::string::npos ? name : name.substr(0, name.find('\0')), problem));
}

}  // namespace protoquant
