// SHA-256 digests (OpenSSL): the keys of stages and the checksums of stored artifacts. A
// cryptographic hash, so two different inputs never share a key in practice and a changed file
// is always noticed.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include <absl/status/statusor.h>

namespace protoquant {

// Lower-case hex, 64 characters.
std::string sha256_hex(std::string_view bytes);
absl::StatusOr<std::string> sha256_file(const std::filesystem::path& path);

}  // namespace protoquant
