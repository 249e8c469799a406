// The artifact store: every stage's outputs, filed under the stage's key (a SHA-256 of its
// inputs, see stage_key.h), so any run whose stage has the same inputs reuses them instead of
// computing them again (DVC's cache, keyed the way dvc.lock keys a stage).
//
//   <root>/<stage>/<key>/artifact.json   {stage, key, inputs, record, files: {name: {bytes, sha256}}}
//   <root>/<stage>/<key>/<file>...       the stage's files (model/*.pt)
//   <root>/<stage>/<key>.work/           a stage in progress: its per-epoch checkpoint
//   <root>/<stage>/<key>.lock            held (flock) by the process computing that stage
//   <root>/features/<key>.pqfc           frozen-backbone features (FeatureCache entries)
//
// An artifact appears whole or not at all: it is assembled in a staging folder (its files copied
// in, so the store owns its bytes) and renamed into place. Reuse places hard links to the filed
// files in the run folder: a file rewritten in place there changes the filed one too, which its
// checksum then catches (the stage is computed again). Every file is checked against its SHA-256 when reused; a corrupt or incomplete artifact
// is set aside with a one-line warning and the stage is computed again.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include <absl/status/status.h>
#include <nlohmann/json.hpp>

namespace protoquant {

class ArtifactStore {
 public:
  explicit ArtifactStore(std::filesystem::path root) : root_(std::move(root)) {}

  const std::filesystem::path& root() const { return root_; }
  std::filesystem::path folder(const std::string& stage, const std::string& key) const;
  std::filesystem::path work_folder(const std::string& stage, const std::string& key) const;
  std::filesystem::path features_folder() const { return root_ / "features"; }

  // Whether a finished artifact is filed (not verified: for plans).
  bool contains(const std::string& stage, const std::string& key) const;
  // The artifact's artifact.json when it is complete and every file matches its checksum; nullopt
  // when there is none or it was corrupt (then it is moved aside, and a warning says why).
  std::optional<nlohmann::json> find(const std::string& stage, const std::string& key) const;
  // Files `files` (name in the artifact -> existing file) with `record` under (stage, key). When
  // another process filed the same key first, theirs is kept (equal inputs, equal artifact),
  // unless `replace` (a forced recomputation) sets the old one aside.
  absl::Status publish(const std::string& stage, const std::string& key, const nlohmann::json& inputs,
                       const nlohmann::json& record, const std::map<std::string, std::filesystem::path>& files,
                       bool replace = false) const;

  // An exclusive lock on (stage, key) for as long as the object lives, so two sweep members that
  // need the same stage compute it once: the second waits, then finds it filed.
  class Lock {
   public:
    Lock(Lock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
    Lock& operator=(Lock&&) = delete;
    ~Lock();

   private:
    friend class ArtifactStore;
    explicit Lock(int fd) : fd_(fd) {}
    int fd_;
  };
  absl::StatusOr<Lock> lock(const std::string& stage, const std::string& key) const;

 private:
  std::filesystem::path root_;
};

// A file placed at `destination` with the content of `source`: a hard link when both are on one
// file system, else a copy; atomically (a reader sees the old file or the new one).
absl::Status place_file(const std::filesystem::path& source, const std::filesystem::path& destination);

}  // namespace protoquant
