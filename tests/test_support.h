// Helpers shared by the test files: temporary folders, files, the built-in registry, the CLI.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "protoquant/collectives.h"
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
// A run folder's results.json, parsed.
nlohmann::json results_of(const std::filesystem::path& run);

// A registry holding every built-in plugin of this build (loaded once per process).
Registry& builtin_registry();

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};
// Runs the protoquant CLI with `arguments` (shell-quoted by the caller).
CommandResult run_cli(const std::string& arguments);
// Runs a shell command line (bound it with `timeout` if it can wait on another process).
CommandResult run_command(const std::string& shell_command);

// The reference data of tests/backbone_fixtures.py (torchvision outputs, exported weights,
// scripted modules). Generated once per build tree by /usr/bin/python3 and reused while the
// script and tools/export_backbone.py are unchanged. Throws when Python, torch or torchvision
// is missing: they are declared dependencies (tools/install-deps.sh), so the tests fail.
std::filesystem::path backbone_fixtures();

// The tensor stored under `key` in a torch.save'd plain dict of tensors.
torch::Tensor load_reference(const std::filesystem::path& file, const std::string& key);

// max |actual - expected| / max |expected|: the error relative to the reference's scale.
double relative_error(const torch::Tensor& actual, const torch::Tensor& expected);

// Runs fn(group) on `world_size` ranks, each a thread of this process with its own Gloo group on
// 127.0.0.1 (collective code takes the group as an argument), and returns each rank's result in
// rank order. A rank that fails or a group that does not form within 60 s fails the test.
std::vector<torch::Tensor> on_ranks(int world_size, const std::function<torch::Tensor(Collectives&)>& fn);

// The Fashion-MNIST folder, or empty if the Debian package is not installed.
std::string fashion_mnist_root();

// `<dir>/<name>.toml`: a child of the shipped experiments/<parent> (a synthparts manifest) shrunk
// to seconds: 4 classes of 16 training and 8 test images of 32 px, width 8, one epoch a stage,
// metrics accuracy and grounding.
std::filesystem::path tiny_manifest(const TempDir& dir, const std::string& parent, const std::string& name);

// Headless Chromium (/usr/bin/chromium), or empty when missing. Debian's package is a declared
// dependency (tools/install-deps.sh), so a test that needs it fails rather than skips.
std::string chromium();
// Runs it time-bounded (90 s) in a throw-away profile under `dir`, `arguments` appended (e.g.
// "--screenshot=F --window-size=W,H URL" or "--dump-dom URL"), stdout to `log`, stderr to
// `dir`/chromium.log. Returns the exit status.
int run_chromium(const TempDir& dir, const std::string& arguments, const std::filesystem::path& log);

}  // namespace protoquant::testing
