// Reader for the IDX format of MNIST and Fashion-MNIST (magic 0x0000 <type> <ndims>, big-endian
// int32 dimensions, then the payload), gzip-compressed or raw: zlib reads both transparently.
#pragma once

#include <filesystem>

#include <absl/status/statusor.h>
#include <torch/types.h>

namespace protoquant::datasets {

// An unsigned-byte IDX file as a uint8 tensor of its dimensions. Errors name the file: missing,
// wrong magic, unsupported element type, truncated or oversized payload.
absl::StatusOr<torch::Tensor> read_idx(const std::filesystem::path& path);

}  // namespace protoquant::datasets
