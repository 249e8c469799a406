#include "protoquant/artifact_store.h"

#include <fcntl.h>
#include <cstring>
#include <sys/file.h>
#include <unistd.h>

#include <fstream>
#include <random>

#include <fmt/format.h>

#include "protoquant/atomic_file.h"
#include "protoquant/digest.h"
#include "protoquant/status.h"

namespace protoquant {
namespace fs = std::filesystem;

namespace {

std::string unique_suffix() {
  static std::mt19937_64 generator{std::random_device{}()};
  return fmt::format("{}-{:016x}", ::getpid(), generator());
}

// Why a filed artifact cannot be used, or "" when it is whole.
std::string check_artifact(const fs::path& folder, const std::string& stage, const std::string& key,
                           nlohmann::json* out) {
  auto manifest = read_json_file(folder / "artifact.json");
  if (!manifest.ok()) return std::string(manifest.status().message());
  const nlohmann::json& j = *manifest;
  if (!j.is_object() || j.value("stage", "") != stage || j.value("key", "") != key || !j.contains("files") ||
      !j["files"].is_object() || !j.contains("record")) {
    return "artifact.json does not describe this stage and key";
  }
  for (const auto& [name, file] : j["files"].items()) {
    const fs::path path = folder / name;
    std::error_code ec;
    const auto bytes = fs::file_size(path, ec);
    if (ec) return fmt::format("{} is missing", name);
    if (!file.is_object() || bytes != file.value("bytes", uint64_t{0})) return fmt::format("{} has the wrong size", name);
    auto digest = sha256_file(path);
    if (!digest.ok()) return std::string(digest.status().message());
    if (*digest != file.value("sha256", "")) return fmt::format("{} does not match its SHA-256", name);
  }
  *out = j;
  return "";
}

}  // namespace

absl::Status place_file(const fs::path& source, const fs::path& destination) {
  std::error_code ec;
  fs::create_directories(destination.parent_path(), ec);
  if (ec) return absl::InternalError(fmt::format("{}: cannot create folder: {}", destination.parent_path().string(), ec.message()));
  const fs::path temporary = destination.parent_path() / fmt::format(".{}.{}.tmp", destination.filename().string(), unique_suffix());
  fs::create_hard_link(source, temporary, ec);
  if (ec) {
    ec.clear();
    fs::copy_file(source, temporary, ec);
    if (ec) return absl::InternalError(fmt::format("{}: cannot copy from {}: {}", destination.string(), source.string(), ec.message()));
  }
  fs::rename(temporary, destination, ec);
  if (ec) {
    fs::remove(temporary);
    return absl::InternalError(fmt::format("{}: cannot rename into place: {}", destination.string(), ec.message()));
  }
  return absl::OkStatus();
}

fs::path ArtifactStore::folder(const std::string& stage, const std::string& key) const { return root_ / stage / key; }

fs::path ArtifactStore::work_folder(const std::string& stage, const std::string& key) const {
  return root_ / stage / (key + ".work");
}

bool ArtifactStore::contains(const std::string& stage, const std::string& key) const {
  std::error_code ec;
  return fs::exists(folder(stage, key) / "artifact.json", ec);
}

std::optional<nlohmann::json> ArtifactStore::find(const std::string& stage, const std::string& key) const {
  const fs::path dir = folder(stage, key);
  std::error_code ec;
  if (!fs::exists(dir, ec)) return std::nullopt;
  nlohmann::json artifact;
  const std::string problem = check_artifact(dir, stage, key, &artifact);
  if (problem.empty()) return artifact;
  // Set aside, not deleted: whoever looks into a corrupt store can still see what was there.
  const fs::path aside = root_ / ".corrupt" / fmt::format("{}-{}-{}", stage, key, unique_suffix());
  fs::create_directories(aside.parent_path(), ec);
  fs::rename(dir, aside, ec);
  if (ec) fs::remove_all(dir, ec);
  fmt::print(stderr, "warning: {}: stored '{}' artifact unusable ({}); computing it again\n", dir.string(), stage, problem);
  return std::nullopt;
}

absl::Status ArtifactStore::publish(const std::string& stage, const std::string& key, const nlohmann::json& inputs,
                                    const nlohmann::json& record,
                                    const std::map<std::string, fs::path>& files, bool replace) const {
  const fs::path staging = root_ / ".staging" / fmt::format("{}-{}-{}", stage, key, unique_suffix());
  std::error_code ec;
  fs::create_directories(staging, ec);
  if (ec) return absl::InternalError(fmt::format("{}: cannot create folder: {}", staging.string(), ec.message()));
  auto cleanup = [&] {
    std::error_code ignored;  // not `ec`: the error being reported must survive the cleanup
    fs::remove_all(staging, ignored);
  };
  nlohmann::json listing = nlohmann::json::object();
  for (const auto& [name, source] : files) {
    // A copy, not a link: the store owns its bytes, so a file rewritten in place in a run
    // folder later cannot change a filed artifact.
    fs::copy_file(source, staging / name, ec);
    if (ec) {
      cleanup();
      return absl::InternalError(fmt::format("{}: cannot copy into the store: {}", source.string(), ec.message()));
    }
    auto digest = sha256_file(staging / name);
    if (!digest.ok()) {
      cleanup();
      return digest.status();
    }
    listing[name] = {{"bytes", fs::file_size(staging / name)}, {"sha256", *digest}};
  }
  const nlohmann::json artifact = {{"stage", stage}, {"key", key}, {"inputs", inputs}, {"record", record}, {"files", listing}};
  if (absl::Status written = write_file_atomic(staging / "artifact.json", artifact.dump(2) + "\n"); !written.ok()) {
    cleanup();
    return written;
  }
  const fs::path destination = folder(stage, key);
  fs::create_directories(destination.parent_path(), ec);
  if (replace && fs::exists(destination, ec)) {
    const fs::path old = root_ / ".staging" / fmt::format("replaced-{}-{}-{}", stage, key, unique_suffix());
    fs::rename(destination, old, ec);
    fs::remove_all(old, ec);
  }
  fs::rename(staging, destination, ec);  // fails when the folder exists: someone filed it first
  if (ec) {
    cleanup();
    if (!contains(stage, key)) {
      return absl::InternalError(fmt::format("{}: cannot file the '{}' artifact: {}", destination.string(), stage, ec.message()));
    }
  }
  fs::remove_all(work_folder(stage, key), ec);
  return absl::OkStatus();
}

ArtifactStore::Lock::~Lock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

absl::StatusOr<ArtifactStore::Lock> ArtifactStore::lock(const std::string& stage, const std::string& key) const {
  const fs::path path = root_ / stage / (key + ".lock");
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(fmt::format("{}: cannot open lock file: {}", path.string(), std::strerror(errno)));
  while (::flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) {
      ::close(fd);
      return absl::InternalError(fmt::format("{}: cannot lock", path.string()));
    }
  }
  return Lock(fd);
}

}  // namespace protoquant
