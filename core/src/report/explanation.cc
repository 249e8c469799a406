#include "explanation.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include "pictures.h"
#include "protoquant/localisation.h"
#include "protoquant/status.h"

namespace protoquant {

absl::StatusOr<std::vector<std::vector<ExplainedPrototype::Patch>>> nearest_patches(Model& model, TensorSource& train,
                                                                                   const torch::Tensor& prototypes,
                                                                                   int64_t count) {
  torch::NoGradGuard no_grad;
  model.head->eval();
  const int64_t n = train.size(), k = prototypes.size(0);
  std::vector<std::vector<ExplainedPrototype::Patch>> best(static_cast<size_t>(k));
  const auto parameters = model.head->parameters();
  const torch::Device device = parameters.empty() ? torch::Device(torch::kCPU) : parameters.front().device();
  constexpr int64_t kBatch = 256;
  for (int64_t begin = 0; begin < n; begin += kBatch) {
    PQ_ASSIGN_OR_RETURN(Batch batch, train.get(torch::arange(begin, std::min(n, begin + kBatch))));
    const HeadOutput o = model.head->forward(batch.images.to(device));
    const torch::Tensor s = o.similarity.index_select(1, prototypes.to(o.similarity.device())).to(torch::kCPU);  // B x k x h x w
    const auto [value, cell] = s.flatten(2).max(2);  // B x k: each image's best cell
    const torch::Tensor values = value.to(torch::kFloat64).contiguous(), cells = cell.contiguous();
    const auto v = values.accessor<double, 2>();
    const auto c = cells.accessor<int64_t, 2>();
    for (int64_t i = 0; i < k; ++i) {
      auto& list = best[static_cast<size_t>(i)];
      for (int64_t b = 0; b < s.size(0); ++b) list.push_back({begin + b, c[b][i] / s.size(3), c[b][i] % s.size(3), v[b][i]});
      std::stable_sort(list.begin(), list.end(), [](const auto& x, const auto& y) { return x.similarity > y.similarity; });
      if (static_cast<int64_t>(list.size()) > count) list.resize(static_cast<size_t>(count));
    }
  }
  return best;
}

absl::StatusOr<Explanation> explain_image(Model& model, const torch::Tensor& image, TensorSource& train,
                                          int64_t top, int64_t explained_class, int64_t patches,
                                          const ImageFeatures& features_of) {
  torch::NoGradGuard no_grad;
  model.backbone->eval();
  model.head->eval();
  const HeadOutput out = model.head->forward(features_of(image).to(torch::kFloat32));
  const torch::Tensor weights = model.head->class_weights().detach().to(torch::kCPU, torch::kFloat32);  // C x P
  Explanation e;
  e.predicted = out.logits.argmax(1).item<int64_t>();
  e.explained_class = explained_class < 0 ? e.predicted : explained_class;
  if (e.explained_class >= weights.size(0)) {
    return absl::OutOfRangeError(fmt::format("--class {}: the model has classes 0..{}", explained_class, weights.size(0) - 1));
  }
  e.class_score = out.logits[0][e.explained_class].item<double>();
  const torch::Tensor presence = out.presence[0].to(torch::kCPU);
  const torch::Tensor contribution = presence * weights[e.explained_class];
  const int64_t k = std::min<int64_t>(top, contribution.size(0));
  const torch::Tensor order = std::get<1>(contribution.sort(/*stable=*/true, 0, /*descending=*/true)).slice(0, 0, k);
  const int64_t h = image.size(2), w = image.size(3);
  const torch::Tensor chosen_maps = out.similarity[0].index_select(0, order.to(out.similarity.device()));
  const torch::Tensor up = upsample_maps(chosen_maps, h, w, Upsampling::kBicubic);
  const torch::Tensor peaks = peak_positions(up, PeakTies::kRowMajor);
  e.grid_height = out.similarity.size(2);
  e.grid_width = out.similarity.size(3);
  for (int64_t i = 0; i < k; ++i) {
    ExplainedPrototype p;
    p.prototype = order[i].item<int64_t>();
    p.presence = presence[p.prototype].item<double>();
    p.weight = weights[e.explained_class][p.prototype].item<double>();
    p.contribution = contribution[p.prototype].item<double>();
    p.peak_row = peaks[i][0].item<int64_t>();
    p.peak_column = peaks[i][1].item<int64_t>();
    p.map = up[i];
    e.prototypes.push_back(std::move(p));
  }
  if (patches > 0) {
    PQ_ASSIGN_OR_RETURN(const auto best, nearest_patches(model, train, order, patches));
    for (int64_t i = 0; i < k; ++i) e.prototypes[static_cast<size_t>(i)].nearest = best[static_cast<size_t>(i)];
  }
  return e;
}

cv::Rect cell_region(int64_t row, int64_t column, const BackboneGeometry& g, int64_t height, int64_t width,
                     int64_t grid_height, int64_t grid_width) {
  const double sy = g.stride > 0 ? g.stride : static_cast<double>(height) / grid_height;
  const double sx = g.stride > 0 ? g.stride : static_cast<double>(width) / grid_width;
  const double side = g.receptive_field > 0 ? std::min<double>(g.receptive_field, std::min(height, width)) : 2 * std::max(sy, sx);
  // Continuous coordinates (pixel i spans [i, i + 1)): a field centred on pixel c is at c + 1/2.
  const double cy = g.knows_centres() ? g.centre(row) + 0.5 : (static_cast<double>(row) + 0.5) * sy;
  const double cx = g.knows_centres() ? g.centre(column) + 0.5 : (static_cast<double>(column) + 0.5) * sx;
  const int y0 = std::clamp(static_cast<int>(cy - side / 2), 0, static_cast<int>(height) - 1);
  const int x0 = std::clamp(static_cast<int>(cx - side / 2), 0, static_cast<int>(width) - 1);
  const int y1 = std::clamp(static_cast<int>(cy + side / 2), y0 + 1, static_cast<int>(height));
  const int x1 = std::clamp(static_cast<int>(cx + side / 2), x0 + 1, static_cast<int>(width));
  return {x0, y0, x1 - x0, y1 - y0};
}

absl::StatusOr<cv::Mat> draw_explanation(const Explanation& e, const torch::Tensor& image, const torch::Tensor& parts,
                                         Dataset& dataset, const std::string& train_split,
                                         const BackboneGeometry& geometry) {
  const DatasetInfo& info = dataset.info();
  const int64_t h = image.size(2), w = image.size(3);
  const int scale = upscale_factor(static_cast<int>(std::min(h, w)), 160);
  const int cell_h = static_cast<int>(h) * scale, cell_w = static_cast<int>(w) * scale;
  const int margin = 8, text_h = 24, patches = e.prototypes.empty() ? 0 : static_cast<int>(e.prototypes[0].nearest.size());
  const int patch_side = cell_h;
  const int width = margin + cell_w + margin + patches * (patch_side + margin) + 260;
  const int rows = static_cast<int>(e.prototypes.size()) + 1;
  cv::Mat canvas(margin + rows * (cell_h + text_h + margin), std::max(width, cell_w + 520), CV_8UC3, cv::Scalar(245, 245, 245));
  auto name = [&](int64_t c) { return class_name(info, c); };
  cv::Mat input;
  cv::resize(displayable(image[0], info), input, cv::Size(cell_w, cell_h), 0, 0, cv::INTER_NEAREST);
  if (parts.defined()) draw_annotations(input, parts, torch::Tensor(), scale);
  input.copyTo(canvas(cv::Rect(margin, margin + text_h, cell_w, cell_h)));
  draw_label(canvas, fmt::format("predicted: {}{}", name(e.predicted), e.label >= 0 ? fmt::format("  (label: {})", name(e.label)) : ""),
             cv::Point(margin, margin));
  double shown = 0;
  for (const auto& p : e.prototypes) shown += p.contribution;
  draw_label(canvas, fmt::format("class {}: score {:.3f} = sum of all contributions", name(e.explained_class), e.class_score),
             cv::Point(margin * 2 + cell_w, margin + text_h + 10));
  draw_label(canvas, fmt::format("the {} shown below add up to {:.3f}", e.prototypes.size(), shown),
             cv::Point(margin * 2 + cell_w, margin + text_h + 40));
  for (size_t r = 0; r < e.prototypes.size(); ++r) {
    const auto& p = e.prototypes[r];
    const int top = margin + static_cast<int>(r + 1) * (cell_h + text_h + margin);
    // The map as a heat overlay (min-max scaled per map), the box around its peak.
    const torch::Tensor m = p.map;
    const torch::Tensor scaled = ((m - m.min()) / (m.max() - m.min()).clamp_min(1e-12) * 255).to(torch::kUInt8).contiguous();
    cv::Mat grey(static_cast<int>(h), static_cast<int>(w), CV_8U, scaled.data_ptr<uint8_t>()), heat, big_heat, overlay;
    cv::applyColorMap(grey, heat, cv::COLORMAP_JET);
    cv::resize(heat, big_heat, cv::Size(cell_w, cell_h), 0, 0, cv::INTER_NEAREST);
    cv::addWeighted(input, 0.55, big_heat, 0.45, 0, overlay);
    // The box: the input region the feature cell under the peak sees.
    const cv::Rect box = cell_region(p.peak_row * e.grid_height / h, p.peak_column * e.grid_width / w, geometry, h, w,
                                     e.grid_height, e.grid_width);
    cv::rectangle(overlay, cv::Rect(box.x * scale, box.y * scale, box.width * scale, box.height * scale), cv::Scalar(255, 255, 255), 2);
    cv::drawMarker(overlay, cv::Point(static_cast<int>(p.peak_column) * scale, static_cast<int>(p.peak_row) * scale),
                   cv::Scalar(255, 255, 255), cv::MARKER_CROSS, 12, 2);
    overlay.copyTo(canvas(cv::Rect(margin, top + text_h, cell_w, cell_h)));
    draw_label(canvas, fmt::format("prototype {}: presence {:.3f} x weight {:.3f} = {:.3f}", p.prototype, p.presence, p.weight,
                                   p.contribution),
               cv::Point(margin, top));
    // Its nearest training patches.
    for (size_t j = 0; j < p.nearest.size(); ++j) {
      const auto& patch = p.nearest[j];
      PQ_ASSIGN_OR_RETURN(Batch b, dataset.get_eval_batch(train_split, torch::tensor({patch.image}, torch::kInt64)));
      const cv::Mat train_image = displayable(b.images[0], info);
      const cv::Rect region =
          cell_region(patch.row, patch.column, geometry, train_image.rows, train_image.cols, e.grid_height, e.grid_width);
      cv::Mat crop;
      cv::resize(train_image(region), crop, cv::Size(patch_side, patch_side), 0, 0, cv::INTER_NEAREST);
      const int x = margin * 2 + cell_w + static_cast<int>(j) * (patch_side + margin);
      crop.copyTo(canvas(cv::Rect(x, top + text_h, patch_side, patch_side)));
      draw_label(canvas, fmt::format("#{} cos {:.2f}", patch.image, patch.similarity), cv::Point(x, top + text_h + patch_side - 22));
    }
  }
  return canvas;
}

absl::StatusOr<std::vector<cv::Mat>> draw_gallery(Model& model, TensorSource& train, Dataset& dataset,
                                                  const std::string& train_split, const GalleryOptions& options) {
  const DatasetInfo& info = dataset.info();
  const torch::Tensor weights = model.head->class_weights().detach().to(torch::kCPU, torch::kFloat32);  // C x P
  const int64_t prototypes = weights.size(1);
  const torch::Tensor shown =
      options.prototypes.defined() ? options.prototypes.to(torch::kCPU, torch::kInt64) : torch::arange(prototypes, torch::kInt64);
  if (shown.numel() > 0 && (shown.min().item<int64_t>() < 0 || shown.max().item<int64_t>() >= prototypes)) {
    return absl::OutOfRangeError(fmt::format("gallery: the model has prototypes 0..{}", prototypes - 1));
  }
  std::vector<std::vector<ExplainedPrototype::Patch>> nearest;
  if (static_cast<int64_t>(options.nearest.size()) == prototypes) {
    for (int64_t i = 0; i < shown.numel(); ++i) nearest.push_back(options.nearest[static_cast<size_t>(shown[i].item<int64_t>())]);
  } else {
    PQ_ASSIGN_OR_RETURN(nearest, nearest_patches(model, train, shown, options.patches));
  }
  const BackboneGeometry geometry = model.backbone->geometry();
  const int64_t grid_h = train.inputs().size(2), grid_w = train.inputs().size(3);
  const int side = 96;  // each patch (the receptive field of its cell), upscaled by nearest neighbour
  const int margin = 6, text_w = 300;
  const int64_t count = options.patches;
  auto name = [&](int64_t c) { return class_name(info, c); };
  std::vector<cv::Mat> pages;
  for (int64_t first = 0; first < shown.numel(); first += options.per_page) {
    const int64_t last = std::min(shown.numel(), first + options.per_page);
    cv::Mat page(margin + static_cast<int>(last - first) * (side + margin), text_w + static_cast<int>(count) * (side + margin) + margin,
                 CV_8UC3, cv::Scalar(245, 245, 245));
    for (int64_t i = first; i < last; ++i) {
      const int64_t p = shown[i].item<int64_t>();
      const int top = margin + static_cast<int>(i - first) * (side + margin);
      const bool used = options.usage.defined() && p < options.usage.numel();
      draw_label(page, used ? fmt::format("prototype {} (usage {})", p, options.usage[p].item<int64_t>()) : fmt::format("prototype {}", p),
                 cv::Point(margin, top));
      // Its strongest classes with their weights, two a line.
      const torch::Tensor column = weights.select(1, p);
      const torch::Tensor order = std::get<1>(column.sort(/*stable=*/true, 0, /*descending=*/true));
      for (int64_t line = 0; line < 2; ++line) {
        std::string classes;
        for (int64_t j = 2 * line; j < std::min<int64_t>(2 * line + 2, column.size(0)); ++j) {
          const int64_t c = order[j].item<int64_t>();
          classes += fmt::format("{}{} {:.2f}", j % 2 ? ", " : "", name(c).substr(0, 10), column[c].item<float>());
        }
        if (!classes.empty()) draw_label(page, classes, cv::Point(margin, top + 22 * (line + 1)));
      }
      if (p < static_cast<int64_t>(options.purity.size())) {
        const double purity = options.purity[static_cast<size_t>(p)];
        draw_label(page, std::isnan(purity) ? std::string("purity: not evaluated") : fmt::format("purity {:.2f}", purity),
                   cv::Point(margin, top + 66));
      }
      const auto& patches = nearest[static_cast<size_t>(i)];
      for (size_t j = 0; j < patches.size() && static_cast<int64_t>(j) < count; ++j) {
        const auto& patch = patches[j];
        PQ_ASSIGN_OR_RETURN(Batch b, dataset.get_eval_batch(train_split, torch::tensor({patch.image}, torch::kInt64)));
        const cv::Mat image = displayable(b.images[0], info);
        const cv::Rect region = cell_region(patch.row, patch.column, geometry, image.rows, image.cols, grid_h, grid_w);
        cv::Mat crop;
        cv::resize(image(region), crop, cv::Size(side, side), 0, 0, cv::INTER_NEAREST);
        crop.copyTo(page(cv::Rect(text_w + static_cast<int>(j) * (side + margin), top, side, side)));
      }
    }
    pages.push_back(page);
  }
  return pages;
}

}  // namespace protoquant
