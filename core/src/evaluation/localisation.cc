#include "protoquant/localisation.h"

#include <algorithm>
#include <cmath>

#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

namespace protoquant {

LocalisationSettings LocalisationSettings::in_pixels(int64_t image_height, int64_t feature_height) const {
  LocalisationSettings resolved = *this;
  if (size_unit != SizeUnit::kCells || pixels_per_cell > 0.0 || feature_height < 1) return resolved;
  resolved.pixels_per_cell = static_cast<double>(image_height) / static_cast<double>(feature_height);
  resolved.half_size = std::llround(static_cast<double>(half_size) * resolved.pixels_per_cell);
  resolved.patch_size = std::max<int64_t>(1, std::llround(static_cast<double>(patch_size) * resolved.pixels_per_cell));
  return resolved;
}

absl::StatusOr<LocalisationSettings> LocalisationSettings::for_pass(int64_t image_height, int64_t feature_height,
                                                                   const BackboneGeometry& geometry) const {
  LocalisationSettings resolved = in_pixels(image_height, feature_height);
  if (anchor != Anchor::kReceptiveFieldCentre) return resolved;
  if (!geometry.knows_centres()) {
    return absl::FailedPreconditionError(fmt::format(
        "anchor = receptive_field_centre needs the backbone's receptive-field centres, and its geometry does not say "
        "them (stride {}, centre_offset unknown): give the backbone's centre_offset, or use anchor = cell_centre",
        geometry.stride));
  }
  resolved.stride = geometry.stride;
  resolved.centre_offset = geometry.centre_offset;
  return resolved;
}

namespace {

const char* anchor_name(Anchor anchor) {
  switch (anchor) {
    case Anchor::kPeak: return "peak";
    case Anchor::kCellCentre: return "cell_centre";
    case Anchor::kReceptiveFieldCentre: return "receptive_field_centre";
  }
  return "?";
}

}  // namespace

nlohmann::json LocalisationSettings::to_json() const {
  nlohmann::json json = {{"anchor", anchor_name(anchor)},
                         {"upsampling", upsampling == Upsampling::kBicubic ? "bicubic" : "bilinear"},
                         {"ties", ties == PeakTies::kRowMajor ? "row_major" : "column_first"},
                         {"half_size", half_size},
                         {"inclusive", inclusive},
                         {"patch_size", patch_size},
                         {"size_unit", size_unit == SizeUnit::kCells ? "cells" : "px"}};
  // Given in cells and resolved: the pixels used above, and the cells they came from.
  if (size_unit == SizeUnit::kCells && pixels_per_cell > 0.0) {
    json["pixels_per_cell"] = pixels_per_cell;
    json["half_size_cells"] = static_cast<double>(half_size) / pixels_per_cell;
    json["patch_size_cells"] = static_cast<double>(patch_size) / pixels_per_cell;
  }
  if (anchor == Anchor::kReceptiveFieldCentre && stride > 0) {
    json["stride"] = stride;
    json["centre_offset"] = centre_offset;
  }
  return json;
}

ParamSchema localisation_schema() {
  return ParamSchema{
      ParamSpec::String("anchor", "peak",
                        "peak: the references' region around the upsampled peak and PIP-Net's patch; cell_centre: "
                        "both centred on the peak cell's centre; receptive_field_centre: on its receptive field's "
                        "centre (the backbone's geometry)")
          .one_of({"peak", "cell_centre", "receptive_field_centre"}),
      ParamSpec::String("upsampling", "bicubic", "similarity map to image: bicubic (OpenCV INTER_CUBIC) or bilinear")
          .one_of({"bicubic", "bilinear"}),
      ParamSpec::String("ties", "row_major",
                        "which of equal maxima is the peak: row_major (EvalProtoPNet) or column_first (PIP-Net)")
          .one_of({"row_major", "column_first"}),
      ParamSpec::Int("half_size", 36, "the region around a peak spans peak +- half_size input pixels (36 at 224 px)")
          .range(0, 1 << 20),
      ParamSpec::Bool("inclusive", true, "test the region's bounds inclusively (the reference's 73-px window at 36)"),
      ParamSpec::Int("patch_size", 32, "purity: the patch side in input pixels (32 at 224 px)").range(1, 1 << 20),
      ParamSpec::String("size_unit", "px",
                        "half_size and patch_size in input pixels (px), or in feature-map cells (cells: x H / h, "
                        "the same part of the receptive field at any resolution)")
          .one_of({"px", "cells"}),
  };
}

LocalisationSettings localisation_settings(const Params& params) {
  LocalisationSettings settings;
  const std::string anchor = params.get_string("anchor");
  settings.anchor = anchor == "cell_centre"              ? Anchor::kCellCentre
                    : anchor == "receptive_field_centre" ? Anchor::kReceptiveFieldCentre
                                                         : Anchor::kPeak;
  settings.upsampling = params.get_string("upsampling") == "bilinear" ? Upsampling::kBilinear : Upsampling::kBicubic;
  settings.ties = params.get_string("ties") == "column_first" ? PeakTies::kColumnFirst : PeakTies::kRowMajor;
  settings.half_size = params.get_int("half_size");
  settings.inclusive = params.get_bool("inclusive");
  settings.patch_size = params.get_int("patch_size");
  settings.size_unit = params.get_string("size_unit") == "cells" ? SizeUnit::kCells : SizeUnit::kPixels;
  return settings;
}

torch::Tensor upsample_maps(const torch::Tensor& maps, int64_t height, int64_t width, Upsampling mode) {
  TORCH_CHECK(maps.dim() == 3, "upsample_maps: expected N x h x w maps, got ", maps.sizes());
  const torch::Tensor source = maps.to(torch::kCPU, torch::kFloat32).contiguous();
  const int64_t n = source.size(0), h = source.size(1), w = source.size(2);
  torch::Tensor out = torch::empty({n, height, width}, torch::kFloat32);
  const int interpolation = mode == Upsampling::kBicubic ? cv::INTER_CUBIC : cv::INTER_LINEAR;
  const float* in = source.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const cv::Mat from(static_cast<int>(h), static_cast<int>(w), CV_32F, const_cast<float*>(in + i * h * w));
      cv::Mat to(static_cast<int>(height), static_cast<int>(width), CV_32F, dst + i * height * width);
      cv::resize(from, to, to.size(), 0, 0, interpolation);
    }
  });
  return out;
}

torch::Tensor peak_positions(const torch::Tensor& maps, PeakTies ties) {
  TORCH_CHECK(maps.dim() == 3, "peak_positions: expected N x H x W maps, got ", maps.sizes());
  const torch::Tensor source = maps.to(torch::kCPU, torch::kFloat32).contiguous();
  const int64_t n = source.size(0), h = source.size(1), w = source.size(2);
  torch::Tensor out = torch::empty({n, 2}, torch::kInt64);
  const float* in = source.data_ptr<float>();
  int64_t* peaks = out.data_ptr<int64_t>();
  at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* map = in + i * h * w;
      int64_t best_row = 0, best_column = 0;
      float best = map[0];
      // A strict > keeps the first maximum in the scan order of the tie rule.
      if (ties == PeakTies::kRowMajor) {
        for (int64_t y = 0; y < h; ++y) {
          for (int64_t x = 0; x < w; ++x) {
            if (map[y * w + x] > best) best = map[y * w + x], best_row = y, best_column = x;
          }
        }
      } else {
        for (int64_t x = 0; x < w; ++x) {
          for (int64_t y = 0; y < h; ++y) {
            if (map[y * w + x] > best) best = map[y * w + x], best_row = y, best_column = x;
          }
        }
      }
      peaks[2 * i] = best_row;
      peaks[2 * i + 1] = best_column;
    }
  });
  return out;
}

torch::Tensor parts_near_peaks(const torch::Tensor& peaks, const torch::Tensor& parts, int64_t height, int64_t width,
                               const LocalisationSettings& settings) {
  TORCH_CHECK(peaks.dim() == 2 && parts.dim() == 3 && peaks.size(0) == parts.size(0),
              "parts_near_peaks: peaks N x 2 and parts N x K x 3 expected, got ", peaks.sizes(), " and ", parts.sizes());
  const torch::Tensor p = peaks.to(torch::kCPU, torch::kInt64).contiguous();
  const torch::Tensor k = parts.to(torch::kCPU, torch::kFloat32).contiguous();
  const int64_t n = k.size(0), count = k.size(1);
  torch::Tensor out = torch::zeros({n, count}, torch::kBool);
  const int64_t* peak = p.data_ptr<int64_t>();
  const float* keypoints = k.data_ptr<float>();
  bool* hit = out.data_ptr<bool>();
  const int64_t h = settings.half_size;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = peak[2 * i], x = peak[2 * i + 1];
    const int64_t y0 = std::max<int64_t>(0, y - h), y1 = std::min(height, y + h);
    const int64_t x0 = std::max<int64_t>(0, x - h), x1 = std::min(width, x + h);
    for (int64_t j = 0; j < count; ++j) {
      const float* kp = keypoints + (i * count + j) * 3;
      if (kp[2] <= 0.5F) continue;
      const auto kx = static_cast<int64_t>(kp[0]), ky = static_cast<int64_t>(kp[1]);
      const bool in = settings.inclusive ? (ky >= y0 && ky <= y1 && kx >= x0 && kx <= x1)
                                         : (ky >= y0 && ky < y1 && kx >= x0 && kx < x1);
      hit[i * count + j] = in;
    }
  }
  return out;
}

namespace {

// Where a centred region or patch sits along one axis, in pixel coordinates (pixel i's centre at
// i): the cell's centre (r + 1/2) H / h, a continuous coordinate (pixel i spans [i, i + 1)), is
// pixel (r + 1/2) H / h - 1/2; the receptive field's centre is centre_offset + r x stride. A
// region's peak pixel is the nearest, halves rounded up.
double centre_pixel(int64_t cell, int64_t cells, int64_t pixels, const LocalisationSettings& settings) {
  if (settings.anchor == Anchor::kReceptiveFieldCentre) {
    return settings.centre_offset + static_cast<double>(cell * settings.stride);
  }
  return (static_cast<double>(cell) + 0.5) * static_cast<double>(pixels) / static_cast<double>(cells) - 0.5;
}

}  // namespace

PixelBox purity_patch(int64_t row, int64_t column, int64_t grid_height, int64_t grid_width, int64_t height,
                      int64_t width, int64_t patch_size) {
  auto span = [&](int64_t cell, int64_t cells, int64_t pixels) {
    const int64_t patch = std::min(patch_size, pixels);
    const int64_t skip =
        cells > 1 ? static_cast<int64_t>(std::lround(static_cast<double>(pixels - patch) / static_cast<double>(cells - 1)))
                  : 0;
    int64_t lo = std::max<int64_t>(0, cell * skip), hi = lo + patch;
    // The last cell, or a patch past the border, is shifted inside: every patch is `patch` wide.
    if (cell == cells - 1 || hi > pixels) hi = pixels, lo = pixels - patch;
    // Tested inclusively at both ends, as PIP-Net: lo .. lo + patch (patch + 1 pixels).
    return std::pair<int64_t, int64_t>{lo, hi};
  };
  const auto [y0, y1] = span(row, grid_height, height);
  const auto [x0, x1] = span(column, grid_width, width);
  return {y0, y1, x0, x1};
}

PixelBox patch_of_cell(int64_t row, int64_t column, int64_t grid_height, int64_t grid_width, int64_t height,
                       int64_t width, const LocalisationSettings& settings) {
  if (settings.anchor == Anchor::kPeak) {
    return purity_patch(row, column, grid_height, grid_width, height, width, settings.patch_size);
  }
  auto span = [&](int64_t cell, int64_t cells, int64_t pixels) {
    const int64_t patch = std::min(settings.patch_size, pixels);
    // The cell's centre (r + 1/2) H / h is at continuous coordinate centre + 1/2: the window
    // starts half a patch before it. The receptive field's is a pixel: the patch + 1 pixels
    // tested inclusively sit symmetrically around it.
    const double centre = centre_pixel(cell, cells, pixels, settings);
    const double start = settings.anchor == Anchor::kReceptiveFieldCentre ? centre - static_cast<double>(patch) / 2.0
                                                                          : centre + 0.5 - static_cast<double>(patch) / 2.0;
    const int64_t lo = std::clamp<int64_t>(std::lround(start), 0, pixels - patch);
    return std::pair<int64_t, int64_t>{lo, lo + patch};
  };
  const auto [y0, y1] = span(row, grid_height, height);
  const auto [x0, x1] = span(column, grid_width, width);
  return {y0, y1, x0, x1};
}

torch::Tensor localise_peaks(const torch::Tensor& maps, int64_t height, int64_t width,
                             const LocalisationSettings& settings) {
  if (settings.anchor == Anchor::kPeak) return peak_positions(upsample_maps(maps, height, width, settings.upsampling), settings.ties);
  const int64_t h = maps.size(1), w = maps.size(2);
  const torch::Tensor cells = peak_positions(maps.to(torch::kCPU, torch::kFloat32), settings.ties).contiguous();  // N x 2
  torch::Tensor out = torch::empty_like(cells);
  const int64_t* cell = cells.data_ptr<int64_t>();
  int64_t* pixel = out.data_ptr<int64_t>();
  for (int64_t i = 0; i < cells.size(0); ++i) {
    pixel[2 * i] = std::clamp<int64_t>(
        static_cast<int64_t>(std::floor(centre_pixel(cell[2 * i], h, height, settings) + 0.5)), 0, height - 1);
    pixel[2 * i + 1] = std::clamp<int64_t>(
        static_cast<int64_t>(std::floor(centre_pixel(cell[2 * i + 1], w, width, settings) + 0.5)), 0, width - 1);
  }
  return out;
}

}  // namespace protoquant
