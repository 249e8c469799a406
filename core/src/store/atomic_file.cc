#include "protoquant/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <torch/serialize.h>

#include "protoquant/status.h"

namespace protoquant {
namespace fs = std::filesystem;

absl::StatusOr<nlohmann::json> read_json_file(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(fmt::format("{}: cannot open", path.string()));
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::DataLossError(fmt::format("{}: not valid JSON", path.string()));
  return j;
}

namespace {

fs::path temporary_for(const fs::path& path) {
  return path.parent_path() / fmt::format(".{}.tmp-{}", path.filename().string(), ::getpid());
}

absl::Status sync_file(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return absl::InternalError(fmt::format("{}: {}", path.string(), std::strerror(errno)));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return absl::InternalError(fmt::format("{}: fsync: {}", path.string(), std::strerror(errno)));
  return absl::OkStatus();
}

}  // namespace

absl::Status write_atomic_with(const fs::path& path, const std::function<absl::Status(const fs::path&)>& writer) {
  std::error_code ec;
  if (!path.parent_path().empty()) fs::create_directories(path.parent_path(), ec);
  if (ec) return absl::InternalError(fmt::format("{}: cannot create folder: {}", path.parent_path().string(), ec.message()));
  const fs::path temporary = temporary_for(path);
  absl::Status status = writer(temporary);
  if (status.ok()) status = sync_file(temporary);
  if (status.ok()) {
    fs::rename(temporary, path, ec);
    if (ec) status = absl::InternalError(fmt::format("{}: cannot rename into place: {}", path.string(), ec.message()));
  }
  if (!status.ok()) fs::remove(temporary, ec);
  return status;
}

absl::Status write_file_atomic(const fs::path& path, const std::string& content) {
  return write_atomic_with(path, [&](const fs::path& temporary) -> absl::Status {
    // POSIX writes, so a full disk or a quota says so (errno), which a stream would not.
    const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return absl::InternalError(fmt::format("{}: cannot write: {}", path.string(), std::strerror(errno)));
    size_t written = 0;
    int error = 0;
    while (written < content.size()) {
      const ssize_t n = ::write(fd, content.data() + written, content.size() - written);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        error = n < 0 ? errno : EIO;
        break;
      }
      written += static_cast<size_t>(n);
    }
    if (::close(fd) != 0 && error == 0) error = errno;
    if (error != 0) return absl::InternalError(fmt::format("{}: write failed: {}", path.string(), std::strerror(error)));
    return absl::OkStatus();
  });
}

absl::Status save_archive(torch::serialize::OutputArchive& archive, const fs::path& path) {
  // Serialised in memory first: LibTorch's zip writer throws from its destructor when the disk
  // fills mid-file, which no handler can catch; a failed write here is a plain error.
  std::ostringstream bytes;
  PQ_RETURN_IF_ERROR(guard(fmt::format("serialising {}", path.string()), [&] {
    archive.save_to(bytes);
    return absl::OkStatus();
  }));
  return write_file_atomic(path, std::move(bytes).str());
}

absl::Status save_module(const torch::nn::Module& module, const fs::path& path) {
  torch::serialize::OutputArchive archive;
  PQ_RETURN_IF_ERROR(guard(fmt::format("saving {}", path.string()), [&] {
    module.save(archive);
    return absl::OkStatus();
  }));
  return save_archive(archive, path);
}

absl::Status load_module(torch::nn::Module& module, const fs::path& path) {
  return guard(fmt::format("loading {}", path.string()), [&] {
    torch::serialize::InputArchive archive;
    archive.load_from(path.string());
    module.load(archive);
    return absl::OkStatus();
  });
}

}  // namespace protoquant
