// A disk cache of frozen-backbone feature maps, shared by every run whose backbone weights,
// dataset, split and storage dtype are the same (sweeps, edits, resumed runs). Stages 1-4 read
// features only, so a cache hit skips the backbone entirely.
//
// One file per entry, <dir>/<SHA-256 of the key, 64 hex digits>.pqfc:
//   "PQFCACHE" | uint64 header length | JSON header {version, key, dtype, shape, layout,
//   payload_bytes, crc32} | zero padding to 64 bytes | labels (N int64) | features (N x H x W x D)
// On load an entry that fits in half the available memory is read into memory on huge pages
// (host_memory.h); a larger one is used through a file mapping (pages from the page cache, shared
// by concurrent runs). A file whose key, size or checksum does not match is reported, removed and
// rebuilt: never silently used.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include <absl/status/statusor.h>
#include <torch/nn/module.h>
#include <torch/types.h>

namespace protoquant {

struct CachedFeatures {
  torch::Tensor features;  // N x D x H x W (channels-last memory), in the cache's dtype
  torch::Tensor labels;    // N int64
};

// "fp32", "fp16" or "bf16" -> the LibTorch dtype.
torch::ScalarType feature_dtype(const std::string& name);

// CRC-32 of every parameter and buffer of `module`, in registration order: what identifies
// trained or loaded weights in a cache key.
uint32_t weights_checksum(const torch::nn::Module& module);

class FeatureCache {
 public:
  // Entries up to `in_memory_limit` bytes are read into memory on huge pages when loaded (the
  // stages gather random rows from them twice as fast); larger ones are used in place through a
  // file mapping. Default: half the memory available when loading.
  explicit FeatureCache(std::filesystem::path dir, std::optional<uint64_t> in_memory_limit = std::nullopt)
      : dir_(std::move(dir)), in_memory_limit_(in_memory_limit) {}

  std::filesystem::path path_for(const std::string& key) const;
  // The entry for `key`; nullopt when there is none, or when the file was unusable (then a one-line
  // warning says why and the file is removed, so the caller rebuilds it).
  std::optional<CachedFeatures> load(const std::string& key) const;
  // Writes the entry atomically; features N x D x H x W in the dtype to store.
  absl::Status store(const std::string& key, const torch::Tensor& features, const torch::Tensor& labels) const;

 private:
  std::filesystem::path dir_;
  std::optional<uint64_t> in_memory_limit_;
};

}  // namespace protoquant
