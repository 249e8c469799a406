#include "test_support.h"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "protoquant/launcher.h"
#include "protoquant/plugin_loader.h"
#include "protoquant/process_group.h"

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

nlohmann::json results_of(const fs::path& run) { return nlohmann::json::parse(read_text(run / "results.json")); }

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

CommandResult run_cli(const std::string& arguments) { return run_command(std::string(PQ_CLI) + " " + arguments); }

CommandResult run_command(const std::string& shell_command) {
  CommandResult result;
  const std::string command = shell_command + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer{};
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

fs::path backbone_fixtures() {
  static const fs::path folder = [] {
    const fs::path script = fs::path(PQ_SOURCE_DIR) / "tests" / "backbone_fixtures.py";
    const fs::path exporter = fs::path(PQ_SOURCE_DIR) / "tools" / "export_backbone.py";
    const size_t key = std::hash<std::string>{}(read_text(script) + read_text(exporter));
    const fs::path root = PQ_BACKBONE_FIXTURE_DIR;
    const fs::path dir = root / fmt::format("{:016x}", key);
    if (fs::exists(dir / "complete")) return dir;
    // Another test process may be generating the same folder: each writes its own temporary one,
    // and the first rename wins.
    const fs::path tmp = root / fmt::format("tmp-{}", getpid());
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    const std::string command = fmt::format("/usr/bin/python3 {} {} > {} 2>&1", script.string(), tmp.string(),
                                            (tmp / "log.txt").string());
    if (std::system(command.c_str()) != 0) {
      const std::string log = read_text(tmp / "log.txt");
      fs::remove_all(tmp);
      throw std::runtime_error(
          fmt::format("{} failed (python3 with torch and torchvision is required): {}", script.string(), log));
    }
    write_text(tmp / "complete", "");
    std::error_code ec;
    for (const auto& old : fs::directory_iterator(root)) {  // earlier versions: ~400 MB each
      const std::string name = old.path().filename().string();
      if (old.path() != dir && old.path() != tmp && name.rfind("tmp-", 0) != 0) fs::remove_all(old.path(), ec);
    }
    fs::rename(tmp, dir, ec);
    if (ec) fs::remove_all(tmp, ec);  // lost the race: the other process's folder is complete
    return dir;
  }();
  return folder;
}

torch::Tensor load_reference(const fs::path& file, const std::string& key) {
  const std::string bytes = read_text(file);
  const c10::IValue value = torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
  return value.toGenericDict().at(key).toTensor();
}

double relative_error(const torch::Tensor& actual, const torch::Tensor& expected) {
  return ((actual - expected).abs().max() / expected.abs().max()).item<double>();
}

std::string fashion_mnist_root() {
  const fs::path root = "/usr/share/datasets/fashion-mnist";
  return fs::exists(root / "train-images-idx3-ubyte.gz") ? root.string() : std::string();
}

// A child of a shipped synthparts manifest, shrunk to seconds.
std::filesystem::path tiny_manifest(const TempDir& dir, const std::string& parent, const std::string& name) {
  const std::filesystem::path path = dir / (name + ".toml");
  write_text(path, "extends = \"" + std::string(PQ_SOURCE_DIR) + "/experiments/" + parent + "\"\n" + R"(
[experiment]
name = ")" + name + R"("
threads = 2

[dataset]
classes = 4
train_per_class = 16
test_per_class = 8
image_size = 32
train_transform = []
eval_transform = []

[backbone]
width = 8

[stages.blackbox]
epochs = 1

[stages.codebook]
epochs = 1

[stages.head]
epochs = 1

[[metrics]]
type = "accuracy"

[[metrics]]
type = "grounding"
)");
  return path;
}

std::string chromium() {
  for (const char* candidate : {"/usr/bin/chromium", "/usr/bin/chromium-browser"}) {
    if (fs::exists(candidate)) return candidate;
  }
  return "";
}

int run_chromium(const TempDir& dir, const std::string& arguments, const fs::path& log) {
  const std::string command =
      fmt::format("timeout 90 {} --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run "
                  "--user-data-dir={} {} > {} 2>{}",
                  chromium(), (dir / "profile").string(), arguments, log.string(), (dir / "chromium.log").string());
  return std::system(command.c_str());
}

std::vector<torch::Tensor> on_ranks(int world_size, const std::function<torch::Tensor(Collectives&)>& fn) {
  const auto port = free_local_port();
  if (!port) throw std::runtime_error("no free port on 127.0.0.1");
  std::vector<torch::Tensor> results(static_cast<size_t>(world_size));
  std::vector<std::string> errors(static_cast<size_t>(world_size));
  std::vector<std::thread> ranks;
  for (int r = 0; r < world_size; ++r) {
    ranks.emplace_back([&, r] {
      try {
        GroupSettings settings;
        settings.rank = r;
        settings.world_size = world_size;
        settings.master_port = *port;
        settings.timeout = std::chrono::seconds(60);
        auto group = connect_process_group(settings);
        if (!group.ok()) throw std::runtime_error(std::string(group.status().message()));
        results[static_cast<size_t>(r)] = fn(**group);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
    });
  }
  for (auto& rank : ranks) rank.join();
  for (int r = 0; r < world_size; ++r) {
    EXPECT_EQ(errors[static_cast<size_t>(r)], "") << "rank " << r;
  }
  return results;
}

}  // namespace protoquant::testing
