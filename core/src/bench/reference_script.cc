#include <cstdio>
#include <regex>

#include <fmt/format.h>

#include "bench.h"

namespace protoquant {

absl::StatusOr<std::optional<double>> run_reference(const std::string& command, const std::string& value) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return absl::InternalError(fmt::format("cannot start: {}", command));
  std::string output;
  char buffer[512];
  while (fgets(buffer, sizeof buffer, pipe) != nullptr) output += buffer;
  const int rc = pclose(pipe);
  if (output.find("No module named 'torch") != std::string::npos) {
    fmt::print("reference: not run, /usr/bin/python3 has no PyTorch (Debian's python3-torch is not installed)\n");
    return std::optional<double>();
  }
  std::smatch match;
  if (std::regex_search(output, match, std::regex(R"(reference_error: ([^\n]*))"))) {
    fmt::print("reference: eager PyTorch fails this work: {}\n", match[1].str());
    return std::optional<double>();
  }
  if (rc != 0 || !std::regex_search(output, match, std::regex(value + R"(: ([0-9.eE+-]+))"))) {
    return absl::InternalError(fmt::format("reference failed ({}): {}", command, output));
  }
  // Its description lines (the value itself is printed by the caller under its own name).
  fmt::print("{}", output.substr(0, output.find(value + ":")));
  return std::optional<double>(std::stod(match[1]));
}

}  // namespace protoquant
