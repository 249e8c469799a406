#include "pictures.h"

#include <algorithm>
#include <cmath>
#include <map>

#include <fmt/format.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include "protoquant/atomic_file.h"
#include "protoquant/status.h"

namespace protoquant {

cv::Mat displayable(const torch::Tensor& image, const DatasetInfo& info) {
  // A copy: .to() returns the caller's own tensor when it is already CPU fp32, and the loop below
  // writes in place.
  torch::Tensor x = image.detach().to(torch::kCPU, torch::kFloat32, /*non_blocking=*/false, /*copy=*/true);
  const int64_t c = x.size(0);
  for (int64_t i = 0; i < c; ++i) {
    const double s = i < static_cast<int64_t>(info.std.size()) ? info.std[static_cast<size_t>(i)] : 1.0;
    const double m = i < static_cast<int64_t>(info.mean.size()) ? info.mean[static_cast<size_t>(i)] : 0.0;
    x[i].mul_(s).add_(m);
  }
  x = (x.clamp(0, 1) * 255.0).round().to(torch::kUInt8);
  if (c == 1) x = x.expand({3, -1, -1});
  // RGB planes -> interleaved BGR.
  const torch::Tensor bgr = x.index({torch::tensor({2, 1, 0})}).permute({1, 2, 0}).contiguous();
  return cv::Mat(static_cast<int>(bgr.size(0)), static_cast<int>(bgr.size(1)), CV_8UC3, bgr.data_ptr<uint8_t>()).clone();
}

std::string class_name(const DatasetInfo& info, int64_t c) {
  return c >= 0 && c < static_cast<int64_t>(info.class_names.size()) ? info.class_names[static_cast<size_t>(c)]
                                                                     : std::to_string(c);
}

int upscale_factor(int side, int min_side) { return std::max(1, (min_side + side - 1) / std::max(1, side)); }

cv::Scalar part_colour(int64_t part) {
  const double hue = std::fmod(static_cast<double>(part) * 0.618033988749895 + 0.1, 1.0) * 180.0;
  cv::Mat hsv(1, 1, CV_8UC3, cv::Scalar(hue, 255, 255)), bgr;
  cv::cvtColor(hsv, bgr, cv::COLOR_HSV2BGR);
  const auto p = bgr.at<cv::Vec3b>(0, 0);
  return {static_cast<double>(p[0]), static_cast<double>(p[1]), static_cast<double>(p[2])};
}

void draw_annotations(cv::Mat& canvas, const torch::Tensor& parts, const torch::Tensor& box, int scale) {
  const int radius = std::max(2, scale + 1);
  if (box.defined() && box.numel() == 4) {
    const torch::Tensor b = box.to(torch::kCPU, torch::kFloat32);
    cv::rectangle(canvas, cv::Point(static_cast<int>(b[0].item<float>() * scale), static_cast<int>(b[1].item<float>() * scale)),
                  cv::Point(static_cast<int>(b[2].item<float>() * scale), static_cast<int>(b[3].item<float>() * scale)),
                  cv::Scalar(255, 255, 255), 1);
  }
  if (!parts.defined()) return;
  const torch::Tensor k = parts.to(torch::kCPU, torch::kFloat32);
  for (int64_t j = 0; j < k.size(0); ++j) {
    const float x = k[j][0].item<float>(), y = k[j][1].item<float>();
    const bool visible = k[j][2].item<float>() > 0.5F;
    if (!visible && x == 0 && y == 0) continue;  // not annotated
    // The keypoint's pixel centre, scaled.
    const cv::Point at(static_cast<int>(std::lround((x + 0.5) * scale - 0.5)), static_cast<int>(std::lround((y + 0.5) * scale - 0.5)));
    cv::circle(canvas, at, radius + 1, cv::Scalar(0, 0, 0), visible ? cv::FILLED : 1, cv::LINE_8);
    cv::circle(canvas, at, radius, part_colour(j), visible ? cv::FILLED : 1, cv::LINE_8);
  }
}

void draw_label(cv::Mat& canvas, const std::string& text, cv::Point origin) {
  // FONT_HERSHEY_SIMPLEX at 0.5 has a 12 px cap height; a white band keeps it readable anywhere.
  int baseline = 0;
  const cv::Size size = cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, 0.5, 1, &baseline);
  cv::rectangle(canvas, cv::Rect(origin.x, origin.y, size.width + 4, size.height + baseline + 4), cv::Scalar(255, 255, 255),
                cv::FILLED);
  cv::putText(canvas, text, cv::Point(origin.x + 2, origin.y + 2 + size.height), cv::FONT_HERSHEY_SIMPLEX, 0.5,
              cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
}

absl::Status write_png(const std::filesystem::path& path, const cv::Mat& image) {
  std::vector<uchar> bytes;
  if (!cv::imencode(".png", image, bytes)) return absl::InternalError(fmt::format("{}: PNG encoding failed", path.string()));
  return write_file_atomic(path, std::string(bytes.begin(), bytes.end()));
}

absl::StatusOr<Preview> data_preview(Dataset& dataset, const std::string& split, int64_t per_class, bool augment,
                                     int64_t max_classes) {
  const DatasetInfo& info = dataset.info();
  const int64_t n = dataset.size(split);
  if (n == 0) return absl::InvalidArgumentError(fmt::format("dataset '{}' has no samples in split '{}'", info.name, split));
  const int64_t classes = std::min(info.num_classes, max_classes);
  // The first per_class samples of each shown class, scanning the split in batches.
  std::map<int64_t, std::vector<int64_t>> chosen;
  int64_t full = 0;
  constexpr int64_t kScan = 256;
  for (int64_t begin = 0; begin < n && full < classes; begin += kScan) {
    const torch::Tensor indices = torch::arange(begin, std::min(n, begin + kScan), torch::kInt64);
    PQ_ASSIGN_OR_RETURN(Batch batch, dataset.get_eval_batch(split, indices));
    for (int64_t i = 0; i < indices.size(0); ++i) {
      const int64_t label = batch.labels[i].item<int64_t>();
      auto& list = chosen[label];
      if (label >= classes || static_cast<int64_t>(list.size()) >= per_class) continue;
      list.push_back(begin + i);
      if (static_cast<int64_t>(list.size()) == per_class) ++full;
    }
  }
  const int scale = upscale_factor(static_cast<int>(std::min(info.height, info.width)), 96);
  const int cell_w = static_cast<int>(info.width) * scale, cell_h = static_cast<int>(info.height) * scale;
  const int margin = 6, label_w = 160, title_h = 28;
  Preview preview;
  preview.image = cv::Mat(title_h + static_cast<int>(classes) * (cell_h + margin) + margin,
                          label_w + static_cast<int>(per_class) * (cell_w + margin) + margin, CV_8UC3, cv::Scalar(235, 235, 235));
  draw_label(preview.image,
             fmt::format("{} / {} ({} transform, {}x{} px{})", info.name, split, augment ? "training" : "eval",
                         info.width, info.height, scale > 1 ? fmt::format(", shown x{}", scale) : ""),
             cv::Point(margin, 4));
  for (int64_t c = 0; c < classes; ++c) {
    const int top = title_h + static_cast<int>(c) * (cell_h + margin);
    const std::string name = c < static_cast<int64_t>(info.class_names.size()) ? info.class_names[static_cast<size_t>(c)]
                                                                               : std::to_string(c);
    draw_label(preview.image, name.substr(0, 18), cv::Point(margin, top + cell_h / 2 - 10));
    const auto& list = chosen[c];
    if (list.empty()) continue;
    const torch::Tensor indices = torch::tensor(list, torch::kInt64);
    PQ_ASSIGN_OR_RETURN(Batch batch, augment ? dataset.get_batch(split, indices) : dataset.get_eval_batch(split, indices));
    for (size_t j = 0; j < list.size(); ++j) {
      const auto i = static_cast<int64_t>(j);
      cv::Mat shown;
      cv::resize(displayable(batch.images[i], info), shown, cv::Size(cell_w, cell_h), 0, 0, cv::INTER_NEAREST);
      draw_annotations(shown, batch.parts.defined() ? batch.parts[i] : torch::Tensor(),
                       batch.boxes.defined() ? batch.boxes[i] : torch::Tensor(), scale);
      const cv::Rect rect(label_w + i * (cell_w + margin), top, cell_w, cell_h);
      shown.copyTo(preview.image(rect));
      preview.cells.push_back({list[j], c, rect, scale});
    }
  }
  return preview;
}

}  // namespace protoquant
