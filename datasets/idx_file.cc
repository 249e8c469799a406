#include "idx_file.h"

#include <unistd.h>
#include <zlib.h>

#include <array>
#include <filesystem>
#include <memory>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

namespace protoquant::datasets {

namespace {

struct GzCloser {
  void operator()(gzFile f) const { gzclose(f); }
};

// Reads up to `size` bytes; returns how many were read, or -1 on a decompression error.
int64_t read_bytes(gzFile f, void* out, int64_t size) {
  int64_t done = 0;
  auto* bytes = static_cast<unsigned char*>(out);
  while (done < size) {
    const auto chunk = static_cast<unsigned>(std::min<int64_t>(size - done, 1 << 30));
    const int n = gzread(f, bytes + done, chunk);
    if (n < 0) return -1;
    if (n == 0) {
      // End of input: a clean end of the stream, or a damaged/cut gzip stream.
      int code = Z_OK;
      gzerror(f, &code);
      if (code != Z_OK && code != Z_STREAM_END) return -1;
      break;
    }
    done += n;
  }
  return done;
}

}  // namespace

absl::StatusOr<torch::Tensor> read_idx(const std::filesystem::path& path) {
  const std::string name = path.string();
  if (!std::filesystem::is_regular_file(path)) return absl::NotFoundError(fmt::format("{}: file not found", name));
  std::unique_ptr<gzFile_s, GzCloser> file(gzopen(name.c_str(), "rb"));
  if (!file) return absl::NotFoundError(fmt::format("{}: cannot open", name));

  std::array<unsigned char, 4> magic{};
  const int64_t header = read_bytes(file.get(), magic.data(), 4);
  if (header < 0) return absl::DataLossError(fmt::format("{}: corrupt or truncated gzip stream", name));
  if (header != 4) {
    return absl::DataLossError(fmt::format("{}: truncated: no IDX header", name));
  }
  if (magic[0] != 0 || magic[1] != 0) {
    return absl::InvalidArgumentError(fmt::format("{}: not an IDX file (magic {:02x}{:02x}{:02x}{:02x})", name,
                                                  magic[0], magic[1], magic[2], magic[3]));
  }
  if (magic[2] != 0x08) {
    return absl::InvalidArgumentError(
        fmt::format("{}: IDX element type 0x{:02x} is not supported (only unsigned bytes, 0x08)", name, magic[2]));
  }
  const int ndims = magic[3];
  if (ndims < 1 || ndims > 4) {
    return absl::InvalidArgumentError(fmt::format("{}: IDX file with {} dimensions (expected 1 to 4)", name, ndims));
  }
  std::vector<int64_t> dims;
  int64_t total = 1;
  for (int i = 0; i < ndims; ++i) {
    std::array<unsigned char, 4> be{};
    if (read_bytes(file.get(), be.data(), 4) != 4) {
      return absl::DataLossError(fmt::format("{}: truncated: header ends inside the dimensions", name));
    }
    const int64_t dim = (int64_t{be[0]} << 24) | (int64_t{be[1]} << 16) | (int64_t{be[2]} << 8) | int64_t{be[3]};
    if (dim <= 0 || dim > (int64_t{1} << 31) - 1) {
      return absl::InvalidArgumentError(fmt::format("{}: invalid dimension {} in the IDX header", name, dim));
    }
    dims.push_back(dim);
    // Checked before multiplying: four 31-bit dimensions overflow 64 bits (UBSan found it).
    if (dim > (int64_t{1} << 36) / total) return absl::InvalidArgumentError(fmt::format("{}: IDX payload too large", name));
    total *= dim;
  }
  // The header is checked against the file before anything is allocated from it: raw data must
  // be exactly that long, and deflate expands at most 1032-fold, so a gzip file too small for its
  // header is refused at once (a header declaring 65535 x 65535 images once reached LibTorch's
  // allocator).
  std::error_code ec;
  const uint64_t file_size = std::filesystem::file_size(path, ec);
  const bool compressed = gzdirect(file.get()) == 0;
  const uint64_t header_bytes = 4 + 4 * static_cast<uint64_t>(ndims);
  if (!ec && !compressed && static_cast<uint64_t>(total) > file_size - std::min(file_size, header_bytes)) {
    return absl::DataLossError(fmt::format("{}: truncated: expected {} bytes of data for {}, found {}", name, total,
                                           fmt::join(dims, "x"), file_size - std::min(file_size, header_bytes)));
  }
  if (!ec && compressed && static_cast<uint64_t>(total) > file_size * 1032) {
    return absl::DataLossError(fmt::format("{}: the header declares {} ({} bytes), more than a gzip file of {} bytes "
                                           "can hold", name, fmt::join(dims, "x"), total, file_size));
  }
  const uint64_t memory = static_cast<uint64_t>(::sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(::sysconf(_SC_PAGE_SIZE));
  if (memory > 0 && static_cast<uint64_t>(total) > memory) {
    return absl::ResourceExhaustedError(fmt::format("{}: {} ({} bytes) is more than this machine's {} bytes of memory",
                                                    name, fmt::join(dims, "x"), total, memory));
  }
  auto tensor = torch::empty(dims, torch::kUInt8);
  const int64_t got = read_bytes(file.get(), tensor.data_ptr<uint8_t>(), total);
  if (got < 0) return absl::DataLossError(fmt::format("{}: corrupt or truncated gzip stream", name));
  if (got < total) {
    return absl::DataLossError(
        fmt::format("{}: truncated: expected {} bytes of data for {}, found {}", name, total, fmt::join(dims, "x"), got));
  }
  unsigned char extra = 0;
  if (read_bytes(file.get(), &extra, 1) != 0) {
    return absl::InvalidArgumentError(fmt::format("{}: trailing bytes after the {} declared in the header", name, total));
  }
  return tensor;
}

}  // namespace protoquant::datasets
