// Reading and decoding image files (JPEG, PNG) with OpenCV. probe_* checks a file cheaply
// without decoding it: the format from its magic bytes, the size from its header and the end
// marker (JPEG EOI, PNG IEND), because libjpeg "decodes" a truncated file into a half-grey image
// with only a warning, which would otherwise slip into training unnoticed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <opencv2/core.hpp>

namespace protoquant::datasets {

enum class ImageFormat { kJpeg, kPng };

struct ImageHeader {
  ImageFormat format = ImageFormat::kJpeg;
  int width = 0;
  int height = 0;
};

// The most pixels an image may declare: Pillow's decompression-bomb limit (2 x its
// MAX_IMAGE_PIXELS), above any photograph a dataset of this field holds (a 30000 x 30000 PNG of
// under 1 MB would otherwise be decoded, at 2.7 GB, every epoch). probe_* refuse larger ones.
constexpr uint64_t kMaxDecodedPixels = 178956970;

// True for the extensions the image datasets read (.jpg, .jpeg, .png, any case).
bool has_image_extension(const std::filesystem::path& path);

// Checks magic bytes, header and end marker of an in-memory file. Errors say what is wrong
// ("not a JPEG or PNG image", "truncated: no JPEG end marker") without the file name.
absl::StatusOr<ImageHeader> probe_image(const uint8_t* data, size_t size);
// The same on a file, and a PNG's data too (every chunk's CRC, the image data inflating to the
// size its header declares), which the datasets check once, when they open: a PNG that would
// fail in libpng is skipped there, by every stage alike. Errors name the file.
absl::StatusOr<ImageHeader> probe_file(const std::filesystem::path& path);

absl::StatusOr<std::vector<uint8_t>> read_bytes(const std::filesystem::path& path);

// Decodes to 8-bit, 3-channel BGR (OpenCV's order; to_tensor writes RGB), grey images expanded.
// reduction (1, 2, 4 or 8) decodes a JPEG at that fraction of its size inside libjpeg (the DCT
// is scaled, far cheaper than decoding in full and resizing); PNGs ignore it. EXIF orientation is
// ignored, as PIL does, so pixel coordinates match the annotations.
absl::StatusOr<cv::Mat> decode_bgr(const std::vector<uint8_t>& bytes, ImageFormat format, int reduction);

// Encodes BGR pixels as JPEG (quality 1-100) or PNG according to the extension, atomically.
absl::Status write_image(const std::filesystem::path& path, const cv::Mat& bgr, int jpeg_quality = 95);

}  // namespace protoquant::datasets
