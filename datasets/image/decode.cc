#include "decode.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <vector>

#include <fmt/format.h>
#include <zlib.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "protoquant/atomic_file.h"
#include "protoquant/status.h"

namespace protoquant::datasets {
namespace fs = std::filesystem;

namespace {

constexpr uint8_t kPngSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
// Encoders may pad a file after its end marker; look for the marker in this many final bytes.
constexpr size_t kTailBytes = 64;

// Reads `n` bytes at `offset` into `out`; false past the end of the file.
using ReadAt = std::function<bool(uint64_t offset, size_t n, uint8_t* out)>;

uint32_t be16(const uint8_t* p) { return (uint32_t{p[0]} << 8) | p[1]; }
uint32_t be32(const uint8_t* p) { return (be16(p) << 16) | be16(p + 2); }

// The bytes of filtered scanlines a PNG's image data inflates to (one filter byte per row), from
// IHDR's width, height, bit depth, colour type and interlace method (Adam7: seven sub-images).
uint64_t png_raw_bytes(uint32_t width, uint32_t height, int bit_depth, int color_type, int interlace) {
  const int channels = color_type == 2 ? 3 : color_type == 4 ? 2 : color_type == 6 ? 4 : 1;
  const uint64_t bits = static_cast<uint64_t>(channels) * static_cast<uint64_t>(bit_depth);
  auto image = [&](uint64_t w, uint64_t h) { return w == 0 || h == 0 ? 0 : h * (1 + (w * bits + 7) / 8); };
  if (interlace == 0) return image(width, height);
  static constexpr int kPasses[7][4] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4},
                                        {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};
  uint64_t total = 0;
  for (const auto& [x0, y0, dx, dy] : kPasses) {
    const uint64_t w = width > static_cast<uint32_t>(x0) ? (width - x0 + dx - 1) / dx : 0;
    const uint64_t h = height > static_cast<uint32_t>(y0) ? (height - y0 + dy - 1) / dy : 0;
    total += image(w, h);
  }
  return total;
}

// A PNG's data, without decoding it: every chunk's CRC, and the IDAT stream inflating to exactly
// the scanlines the header declares. A file whose header is fine but whose data is not (a 10-byte
// IDAT) would otherwise fail only in libpng, batch by batch, after every stage fixed its samples.
absl::Status verify_png_data(const ReadAt& read_at, uint64_t size) {
  z_stream inflater{};
  if (inflateInit(&inflater) != Z_OK) return absl::InternalError("zlib: inflateInit failed");
  const std::shared_ptr<z_stream> end_inflater(&inflater, [](z_stream* z) { inflateEnd(z); });
  uint32_t width = 0, height = 0;
  int bit_depth = 0, color_type = 0, interlace = 0;
  uint64_t inflated = 0, expected = 0;
  bool stream_end = false;
  std::vector<uint8_t> chunk, out(1 << 16);
  for (uint64_t offset = 8;;) {
    uint8_t head[8];
    if (offset + 12 > size || !read_at(offset, 8, head)) return absl::DataLossError("truncated PNG (a chunk is cut)");
    const uint32_t length = be32(head);
    if (length > size - offset - 12) return absl::DataLossError("truncated PNG (a chunk is cut)");
    chunk.resize(4 + static_cast<size_t>(length) + 4);
    if (!read_at(offset + 4, chunk.size(), chunk.data())) return absl::DataLossError("truncated PNG (a chunk is cut)");
    const std::string type(chunk.begin(), chunk.begin() + 4);
    const uint32_t crc = static_cast<uint32_t>(crc32(0, chunk.data(), 4 + length));
    if (crc != be32(chunk.data() + 4 + length)) return absl::DataLossError(fmt::format("corrupt PNG (CRC error in {})", type));
    const uint8_t* data = chunk.data() + 4;
    if (type == "IHDR" && length >= 13) {
      width = be32(data);
      height = be32(data + 4);
      bit_depth = data[8];
      color_type = data[9];
      interlace = data[12];
      expected = png_raw_bytes(width, height, bit_depth, color_type, interlace);
    } else if (type == "IDAT" && !stream_end) {
      inflater.next_in = const_cast<uint8_t*>(data);
      inflater.avail_in = length;
      while (inflater.avail_in > 0 && !stream_end) {
        inflater.next_out = out.data();
        inflater.avail_out = static_cast<uInt>(out.size());
        const int status = inflate(&inflater, Z_NO_FLUSH);
        if (status != Z_OK && status != Z_STREAM_END && status != Z_BUF_ERROR) {
          return absl::DataLossError(fmt::format("corrupt PNG (image data: {})", inflater.msg ? inflater.msg : "zlib error"));
        }
        inflated += out.size() - inflater.avail_out;
        stream_end = status == Z_STREAM_END;
        if (inflated > expected) break;
        if (status == Z_BUF_ERROR && inflater.avail_out != 0) break;  // no progress possible
      }
    } else if (type == "IEND") {
      break;
    }
    offset += 12 + length;
  }
  if (inflated != expected || !stream_end) {
    return absl::DataLossError(fmt::format("corrupt PNG (image data holds {} of the {} bytes its {} x {} header declares)",
                                           inflated, expected, width, height));
  }
  return absl::OkStatus();
}

// The checks shared by the in-memory and the on-disk probe; `size` is the file size. With
// `verify_data`, a PNG's data is checked too (verify_png_data): the datasets do it once, when
// they open.
absl::StatusOr<ImageHeader> probe_via(const ReadAt& read_at, uint64_t size, bool verify_data) {
  uint8_t head[24];
  if (size < sizeof head || !read_at(0, sizeof head, head)) {
    return absl::InvalidArgumentError("not a JPEG or PNG image (too short)");
  }
  std::array<uint8_t, kTailBytes> tail{};
  const size_t tail_n = static_cast<size_t>(std::min<uint64_t>(size, kTailBytes));
  if (!read_at(size - tail_n, tail_n, tail.data())) return absl::DataLossError("cannot read the end of the file");
  ImageHeader header;
  if (head[0] == 0xFF && head[1] == 0xD8 && head[2] == 0xFF) {
    header.format = ImageFormat::kJpeg;
    // Walk the marker segments up to the first start-of-frame, which holds the size.
    uint64_t offset = 2;
    uint8_t segment[9];
    for (;;) {
      if (!read_at(offset, 4, segment)) return absl::DataLossError("truncated JPEG header");
      if (segment[0] != 0xFF) return absl::InvalidArgumentError("corrupt JPEG header (bad marker)");
      const uint8_t marker = segment[1];
      if (marker == 0xFF) { ++offset; continue; }  // fill byte
      const bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
      if (sof) {
        if (!read_at(offset, 9, segment)) return absl::DataLossError("truncated JPEG header");
        header.height = static_cast<int>(be16(segment + 5));
        header.width = static_cast<int>(be16(segment + 7));
        break;
      }
      if (marker == 0xD9 || marker == 0xDA) return absl::InvalidArgumentError("corrupt JPEG (no frame header)");
      offset += 2 + be16(segment + 2);
    }
    bool has_end = false;
    for (size_t i = 0; i + 1 < tail_n; ++i) has_end |= tail[i] == 0xFF && tail[i + 1] == 0xD9;
    if (!has_end) return absl::DataLossError("truncated: no JPEG end marker");
  } else if (std::memcmp(head, kPngSignature, sizeof kPngSignature) == 0) {
    header.format = ImageFormat::kPng;
    if (std::memcmp(head + 12, "IHDR", 4) != 0) return absl::InvalidArgumentError("corrupt PNG (no IHDR chunk)");
    header.width = static_cast<int>(be32(head + 16));
    uint8_t height[4];
    if (!read_at(20, 4, height)) return absl::DataLossError("truncated PNG header");
    header.height = static_cast<int>(be32(height));
    const auto* end = std::search(tail.begin(), tail.begin() + tail_n, "IEND", "IEND" + 4);
    if (end == tail.begin() + tail_n) return absl::DataLossError("truncated: no PNG IEND chunk");
  } else {
    return absl::InvalidArgumentError("not a JPEG or PNG image");
  }
  if (header.width <= 0 || header.height <= 0) {
    return absl::InvalidArgumentError(fmt::format("corrupt header (size {}x{})", header.width, header.height));
  }
  // A decompression bomb (a small file declaring a huge image) would be decoded every epoch.
  if (static_cast<uint64_t>(header.width) * static_cast<uint64_t>(header.height) > kMaxDecodedPixels) {
    return absl::InvalidArgumentError(fmt::format("{} x {} pixels is more than the {} this toolkit decodes (as "
                                                  "Pillow's limit; a decompression bomb?)",
                                                  header.width, header.height, kMaxDecodedPixels));
  }
  if (verify_data && header.format == ImageFormat::kPng) PQ_RETURN_IF_ERROR(verify_png_data(read_at, size));
  return header;
}

absl::Status with_file(const fs::path& path, const absl::Status& status) {
  return absl::Status(status.code(), fmt::format("{}: {}", path.string(), std::string(status.message())));
}

}  // namespace

bool has_image_extension(const fs::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

absl::StatusOr<ImageHeader> probe_image(const uint8_t* data, size_t size) {
  return probe_via(
      [&](uint64_t offset, size_t n, uint8_t* out) {
        if (offset + n > size) return false;
        std::memcpy(out, data + offset, n);
        return true;
      },
      size, /*verify_data=*/false);
}

absl::StatusOr<ImageHeader> probe_file(const fs::path& path) {
  std::error_code ec;
  const uint64_t size = fs::file_size(path, ec);
  if (ec) return absl::NotFoundError(fmt::format("{}: {}", path.string(), ec.message()));
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(fmt::format("{}: cannot open", path.string()));
  auto header = probe_via(
      [&](uint64_t offset, size_t n, uint8_t* out) {
        if (offset + n > size) return false;
        in.seekg(static_cast<std::streamoff>(offset));
        in.read(reinterpret_cast<char*>(out), static_cast<std::streamsize>(n));
        return static_cast<bool>(in);
      },
      size, /*verify_data=*/true);
  if (!header.ok()) return with_file(path, header.status());
  return header;
}

absl::StatusOr<std::vector<uint8_t>> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return absl::NotFoundError(fmt::format("{}: cannot open", path.string()));
  std::vector<uint8_t> bytes(static_cast<size_t>(in.tellg()));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!in) return absl::DataLossError(fmt::format("{}: read failed", path.string()));
  return bytes;
}

absl::StatusOr<cv::Mat> decode_bgr(const std::vector<uint8_t>& bytes, ImageFormat format, int reduction) {
  int flags = cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION;
  if (format == ImageFormat::kJpeg) {
    if (reduction == 2) flags = cv::IMREAD_REDUCED_COLOR_2 | cv::IMREAD_IGNORE_ORIENTATION;
    if (reduction == 4) flags = cv::IMREAD_REDUCED_COLOR_4 | cv::IMREAD_IGNORE_ORIENTATION;
    if (reduction == 8) flags = cv::IMREAD_REDUCED_COLOR_8 | cv::IMREAD_IGNORE_ORIENTATION;
  }
  cv::Mat image;
  try {
    image = cv::imdecode(cv::_InputArray(bytes.data(), static_cast<int>(bytes.size())), flags);
  } catch (const cv::Exception& e) {
    return absl::DataLossError(fmt::format("cannot decode: {}", e.what()));
  }
  if (image.empty()) return absl::DataLossError("cannot decode the image data");
  if (image.depth() != CV_8U) image.convertTo(image, CV_8U, 1.0 / 257.0);  // 16-bit PNG
  return image;
}

absl::Status write_image(const fs::path& path, const cv::Mat& bgr, int jpeg_quality) {
  std::vector<uchar> encoded;
  const bool png = path.extension() == ".png";
  const std::vector<int> options =
      png ? std::vector<int>{} : std::vector<int>{cv::IMWRITE_JPEG_QUALITY, jpeg_quality};
  try {
    if (!cv::imencode(png ? ".png" : ".jpg", bgr, encoded, options)) {
      return absl::InternalError(fmt::format("{}: cannot encode", path.string()));
    }
  } catch (const cv::Exception& e) {
    return absl::InternalError(fmt::format("{}: cannot encode: {}", path.string(), e.what()));
  }
  return write_file_atomic(path, std::string(encoded.begin(), encoded.end()));
}

}  // namespace protoquant::datasets
