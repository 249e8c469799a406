#include "test_support.h"

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include <gtest/gtest.h>

#include "protoquant/plugin_loader.h"

namespace protoquant::testing {
namespace fs = std::filesystem;

TempDir::TempDir() {
  std::random_device device;
  path_ = fs::temp_directory_path() / ("protoquant-test-" + std::to_string(device()) + std::to_string(device()));
  fs::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

Registry& builtin_registry() {
  static Registry* registry = [] {
    auto* r = new Registry();
    const absl::Status status = load_plugin_folder(PQ_BUILTIN_PLUGIN_DIR, *r);
    if (!status.ok()) throw std::runtime_error(std::string(status.message()));
    return r;
  }();
  return *registry;
}

CommandResult run_cli(const std::string& arguments) {
  CommandResult result;
  const std::string command = std::string(PQ_CLI) + " " + arguments + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer{};
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::string fashion_mnist_root() {
  const fs::path root = "/usr/share/datasets/fashion-mnist";
  return fs::exists(root / "train-images-idx3-ubyte.gz") ? root.string() : std::string();
}

}  // namespace protoquant::testing
