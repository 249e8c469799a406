// Where a prototype fires in an image: the one localisation service every interpretability
// metric and the explanations use (METHOD.md, "Localisation"), so their numbers agree. Each choice
// the reference codes make differently is a setting, and every setting is recorded (to_json())
// beside the values it produced.
#pragma once

#include <cstdint>
#include <string>

#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "protoquant/backbone.h"
#include "protoquant/params.h"

namespace protoquant {

enum class Upsampling {
  kBicubic,   // OpenCV INTER_CUBIC (half-pixel centres, replicated border): EvalProtoPNet, PIP-Net
  kBilinear,  // OpenCV INTER_LINEAR: the misalignment benchmark's PLC
};

enum class PeakTies {
  kRowMajor,     // the first maximum in row-major order (EvalProtoPNet's np.where(...)[0][0])
  kColumnFirst,  // PIP-Net's max over rows then over columns: the lowest column, then the lowest row
};

// Where the region (consistency, stability) and the patch (purity) are anchored.
enum class Anchor {
  kPeak,        // the references': the region around the upsampled map's peak pixel, PIP-Net's patch
                // at cell * stride (comparable with published numbers)
  kCellCentre,  // both centred on the peak cell's centre, ((r + 1/2) H / h, (c + 1/2) W / w): where
                // the cell's receptive field is centred for a backbone whose padding keeps it so
  kReceptiveFieldCentre,  // both centred on the peak cell's receptive-field centre, from the
                          // backbone's geometry (centre_offset + r x stride): right for any padding
};

// How half_size and patch_size are counted.
enum class SizeUnit {
  kPixels,  // input pixels, as the references (36 and 32 at 224 px)
  kCells,   // feature-map cells: x the image-to-map ratio H / h, so a setting means the same part of
            // the receptive field at any resolution (resolved by in_pixels when a pass begins)
};

struct LocalisationSettings {
  Anchor anchor = Anchor::kPeak;
  Upsampling upsampling = Upsampling::kBicubic;
  PeakTies ties = PeakTies::kRowMajor;
  // The region around the peak (consistency, stability): rows max(0, y - h) .. min(H, y + h), the
  // same for columns; `inclusive` tests both ends inclusively, as the reference (a 2h + 1 window).
  int64_t half_size = 36;
  bool inclusive = true;
  // PIP-Net's purity patch at feature resolution: a patch_size square at cell * stride, stride =
  // round((H - patch_size) / (h - 1)), shifted inside the image so every patch is patch_size wide.
  int64_t patch_size = 32;
  SizeUnit size_unit = SizeUnit::kPixels;
  double pixels_per_cell = 0.0;  // set by in_pixels for sizes given in cells
  // The backbone's stride and cell 0's receptive-field centre (input pixels), set by for_pass
  // for kReceptiveFieldCentre.
  int64_t stride = 0;
  double centre_offset = 0.0;

  // These settings with half_size and patch_size in pixels for an H-pixel image whose feature map
  // has h rows (cells are taken square, H / h pixels a side); as given when they are in pixels
  // already. The metrics call it when their pass begins.
  LocalisationSettings in_pixels(int64_t image_height, int64_t feature_height) const;
  // in_pixels, and the backbone's receptive-field centres taken from `geometry` for the
  // kReceptiveFieldCentre anchor: an error when the geometry does not know them.
  absl::StatusOr<LocalisationSettings> for_pass(int64_t image_height, int64_t feature_height,
                                                const BackboneGeometry& geometry) const;
  nlohmann::json to_json() const;
};

// The parameters every localising metric takes, and the settings they give.
ParamSchema localisation_schema();
LocalisationSettings localisation_settings(const Params& params);

// N x h x w maps (any device, any float dtype) -> N x H x W fp32 on the CPU, each map resized
// alone by OpenCV, exactly as the references do.
torch::Tensor upsample_maps(const torch::Tensor& maps, int64_t height, int64_t width, Upsampling mode);

// N x H x W -> N x 2 int64 (row, column) of each map's maximum under the tie rule.
torch::Tensor peak_positions(const torch::Tensor& maps, PeakTies ties);

// Peaks N x 2 (row, column) and keypoints N x K x 3 (x, y, visible) in the same pixels -> N x K
// bool: the part is visible and its (truncated) keypoint lies in the region around the peak.
torch::Tensor parts_near_peaks(const torch::Tensor& peaks, const torch::Tensor& parts, int64_t height, int64_t width,
                               const LocalisationSettings& settings);

// PIP-Net's patch of feature cell (row, column) on an h x w grid over an H x W image:
// {y0, y1, x0, x1} in input pixels, y1 = y0 + patch_size: tested inclusively at both ends.
struct PixelBox {
  int64_t y0 = 0, y1 = 0, x0 = 0, x1 = 0;
};
PixelBox purity_patch(int64_t row, int64_t column, int64_t grid_height, int64_t grid_width, int64_t height,
                      int64_t width, int64_t patch_size);
// The patch of a cell as `settings.anchor` says: PIP-Net's (purity_patch), or patch_size wide
// centred on the cell's centre or its receptive field's (y0 = round(centre - patch_size / 2), the
// centre in continuous coordinates, pixel i spanning [i, i + 1)), shifted inside the image.
PixelBox patch_of_cell(int64_t row, int64_t column, int64_t grid_height, int64_t grid_width, int64_t height,
                       int64_t width, const LocalisationSettings& settings);

// Where maps N x h x w localise in an H x W image, N x 2 (row, column) pixels, as `settings.anchor`
// says: the upsampled map's peak (kPeak), the centre pixel floor((r + 1/2) H / h) of the peak cell
// (kCellCentre, no upsampling), or the pixel on its receptive field's centre, a half-pixel centre
// rounded up (kReceptiveFieldCentre).
torch::Tensor localise_peaks(const torch::Tensor& maps, int64_t height, int64_t width,
                             const LocalisationSettings& settings);

// A part keypoint inside an inclusive box (coordinates truncated to integers, as the references).
inline bool inside(const PixelBox& box, float x, float y) {
  const auto xi = static_cast<int64_t>(x), yi = static_cast<int64_t>(y);
  return yi >= box.y0 && yi <= box.y1 && xi >= box.x0 && xi <= box.x1;
}

}  // namespace protoquant
