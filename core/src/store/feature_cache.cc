#include "protoquant/feature_cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "protoquant/atomic_file.h"
#include "protoquant/digest.h"
#include "protoquant/host_memory.h"
#include "protoquant/status.h"

namespace protoquant {
namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'P', 'Q', 'F', 'C', 'A', 'C', 'H', 'E'};
constexpr int kVersion = 1;
constexpr uint64_t kAlign = 64;
constexpr uint64_t kReadChunk = uint64_t{1} << 20;  // loading: read, then checksum while in cache

uint32_t crc32_of(const void* data, size_t bytes, uint32_t crc = 0) {
  const auto* p = static_cast<const Bytef*>(data);
  while (bytes > 0) {  // zlib takes uInt lengths
    const auto chunk = static_cast<uInt>(std::min<size_t>(bytes, 1u << 30));
    crc = static_cast<uint32_t>(::crc32(crc, p, chunk));
    p += chunk;
    bytes -= chunk;
  }
  return crc;
}

const char* dtype_name(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return "fp32";
    case torch::kFloat16: return "fp16";
    case torch::kBFloat16: return "bf16";
    default: return "?";
  }
}

// A read-only mapping that lives as long as any tensor made from it.
struct Mapping {
  void* data = MAP_FAILED;
  size_t size = 0;
  ~Mapping() {
    if (data != MAP_FAILED) ::munmap(data, size);
  }
};

}  // namespace

torch::ScalarType feature_dtype(const std::string& name) {
  if (name == "fp16") return torch::kFloat16;
  if (name == "bf16") return torch::kBFloat16;
  return torch::kFloat32;
}

uint32_t weights_checksum(const torch::nn::Module& module) {
  uint32_t crc = 0;
  auto add = [&](const torch::Tensor& t) {
    const auto c = t.detach().cpu().contiguous();
    crc = crc32_of(c.data_ptr(), c.numel() * c.element_size(), crc);
  };
  for (const auto& p : module.parameters()) add(p);
  for (const auto& b : module.buffers()) add(b);
  return crc;
}

fs::path FeatureCache::path_for(const std::string& key) const {
  // The SHA-256 of the key names the file: stable across builds, and no two keys share a name.
  return dir_ / fmt::format("{}.pqfc", sha256_hex(key));
}

absl::Status FeatureCache::store(const std::string& key, const torch::Tensor& features,
                                 const torch::Tensor& labels) const {
  const fs::path path = path_for(key);
  return write_atomic_with(path, [&](const fs::path& temporary) -> absl::Status {
    // N x H x W x D: the channels-last order the backbones produce, so no transposition here.
    const auto body = features.permute({0, 2, 3, 1}).contiguous().cpu();
    const auto label_bytes = labels.to(torch::kInt64).contiguous().cpu();
    const size_t feature_size = body.numel() * body.element_size();
    const size_t label_size = label_bytes.numel() * sizeof(int64_t);
    uint32_t crc = crc32_of(label_bytes.data_ptr(), label_size);
    crc = crc32_of(body.data_ptr(), feature_size, crc);
    const nlohmann::json header = {{"version", kVersion},
                                   {"key", key},
                                   {"dtype", dtype_name(body.scalar_type())},
                                   {"shape", features.sizes().vec()},
                                   {"layout", "nhwc"},
                                   {"payload_bytes", label_size + feature_size},
                                   {"crc32", crc}};
    const std::string text = header.dump();
    const uint64_t length = text.size();
    const uint64_t start = (sizeof kMagic + sizeof length + length + kAlign - 1) / kAlign * kAlign;
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out.write(kMagic, sizeof kMagic);
    out.write(reinterpret_cast<const char*>(&length), sizeof length);
    out.write(text.data(), static_cast<std::streamsize>(length));
    const std::string padding(start - sizeof kMagic - sizeof length - length, '\0');
    out.write(padding.data(), static_cast<std::streamsize>(padding.size()));
    out.write(static_cast<const char*>(label_bytes.data_ptr()), static_cast<std::streamsize>(label_size));
    out.write(static_cast<const char*>(body.data_ptr()), static_cast<std::streamsize>(feature_size));
    out.close();
    if (!out) return absl::InternalError(fmt::format("{}: write failed: {}", path.string(), std::strerror(errno)));
    return absl::OkStatus();
  });
}

std::optional<CachedFeatures> FeatureCache::load(const std::string& key) const {
  const fs::path path = path_for(key);
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::nullopt;
  auto reject = [&](const std::string& why) -> std::optional<CachedFeatures> {
    fmt::print(stderr, "warning: {}: feature cache entry {}; rebuilding it\n", path.string(), why);
    fs::remove(path, ec);
    return std::nullopt;
  };
  auto mapping = std::make_shared<Mapping>();
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return reject(fmt::format("unreadable ({})", std::strerror(errno)));
  const std::shared_ptr<void> close_fd(nullptr, [fd](void*) { ::close(fd); });
  {
    struct stat st {};
    ::fstat(fd, &st);
    mapping->size = static_cast<size_t>(st.st_size);
    if (mapping->size > 0) mapping->data = ::mmap(nullptr, mapping->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (mapping->data == MAP_FAILED) return reject("cannot be mapped");
  }
  const auto* bytes = static_cast<const char*>(mapping->data);
  uint64_t length = 0;
  if (mapping->size < sizeof kMagic + sizeof length || std::memcmp(bytes, kMagic, sizeof kMagic) != 0) {
    return reject("is not a feature cache file");
  }
  std::memcpy(&length, bytes + sizeof kMagic, sizeof length);
  if (length > mapping->size - sizeof kMagic - sizeof length) return reject("has a truncated header");
  const auto header = nlohmann::json::parse(bytes + sizeof kMagic + sizeof length,
                                            bytes + sizeof kMagic + sizeof length + length, nullptr, false);
  // The checksum covers the payload only: every header field is checked for presence and type.
  if (header.is_discarded() || !header.is_object() || !header.contains("version") ||
      !header["version"].is_number_integer() || header["version"].get<int>() != kVersion ||
      !header.contains("key") || !header["key"].is_string() || !header.contains("dtype") ||
      !header["dtype"].is_string() || !header.contains("shape") || !header["shape"].is_array() ||
      !header.contains("payload_bytes") || !header["payload_bytes"].is_number_unsigned() ||
      !header.contains("crc32") || !header["crc32"].is_number_unsigned()) {
    return reject("has an unreadable header");
  }
  if (header["key"].get<std::string>() != key) return reject("belongs to another key (hash collision or tampering)");
  std::vector<int64_t> shape;
  for (const auto& d : header["shape"]) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0) return reject("has an unreadable header");
    shape.push_back(d.get<int64_t>());
  }
  const std::string dtype_text = header["dtype"].get<std::string>();
  const auto dtype = feature_dtype(dtype_text);
  if (shape.size() != 4 || dtype_name(dtype) != dtype_text) return reject("has an unknown layout");
  const uint64_t start = (sizeof kMagic + sizeof length + length + kAlign - 1) / kAlign * kAlign;
  const uint64_t payload = header["payload_bytes"].get<uint64_t>();
  const int64_t n = shape[0];
  // A tampered header must not wrap the size arithmetic into a match with the file's size.
  uint64_t expected = c10::elementSize(dtype);
  bool wraps = false;
  for (const int64_t d : shape) wraps |= __builtin_mul_overflow(expected, static_cast<uint64_t>(d), &expected);
  wraps |= __builtin_add_overflow(expected, static_cast<uint64_t>(n) * sizeof(int64_t), &expected);
  wraps |= static_cast<uint64_t>(n) > mapping->size;
  if (wraps || payload != expected || start > mapping->size || payload != mapping->size - start) {
    return reject("is truncated or has the wrong size");
  }
  // An entry that fits in half the available memory is read onto huge pages (host_memory.h: the
  // stages' random-row gathers from it run twice as fast), each chunk checksummed while in cache;
  // a larger one (ImageNet-scale) is checksummed and used in place through the mapping.
  char* base = static_cast<char*>(mapping->data) + start;
  std::function<void(void*)> keep_alive = [mapping](void*) {};
  uint32_t crc = 0;
  if (payload <= in_memory_limit_.value_or(available_memory_bytes() / 2)) {
    const auto copy = empty_on_huge_pages({static_cast<int64_t>(payload)}, torch::kUInt8);
    auto* to = static_cast<char*>(copy.data_ptr());
    for (uint64_t offset = 0; offset < payload;) {
      const ssize_t got = ::pread(fd, to + offset, std::min<uint64_t>(kReadChunk, payload - offset),
                                  static_cast<off_t>(start + offset));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {  // an I/O error says nothing about the entry: warn, recompute, keep the file
        fmt::print(stderr, "warning: {}: feature cache entry cannot be read ({}); computing the features\n",
                   path.string(), got < 0 ? std::strerror(errno) : "unexpected end of file");
        return std::nullopt;
      }
      crc = crc32_of(to + offset, static_cast<size_t>(got), crc);
      offset += static_cast<uint64_t>(got);
    }
    base = to;
    keep_alive = [copy](void*) {};
  } else {
    crc = crc32_of(base, payload);
  }
  if (crc != header["crc32"].get<uint64_t>()) return reject("fails its checksum");
  CachedFeatures out;
  out.labels = torch::from_blob(base, {n}, keep_alive, torch::kInt64);
  out.features = torch::from_blob(base + n * sizeof(int64_t), {n, shape[2], shape[3], shape[1]}, keep_alive,
                                  torch::TensorOptions().dtype(dtype))
                     .permute({0, 3, 1, 2});
  return out;
}

}  // namespace protoquant
