// Helpers shared by the test files: temporary folders, files, the built-in registry, the CLI.
#pragma once

#include <filesystem>
#include <string>

#include "protoquant/registry.h"

namespace protoquant::testing {

// A fresh empty folder under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

void write_text(const std::filesystem::path& path, const std::string& text);
std::string read_text(const std::filesystem::path& path);

// A registry holding every built-in plugin of this build (loaded once per process).
Registry& builtin_registry();

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};
// Runs the protoquant CLI with `arguments` (shell-quoted by the caller).
CommandResult run_cli(const std::string& arguments);

// The Fashion-MNIST folder, or empty if the Debian package is not installed.
std::string fashion_mnist_root();

}  // namespace protoquant::testing
