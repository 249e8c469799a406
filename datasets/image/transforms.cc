#include "transforms.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <opencv2/imgproc.hpp>

namespace protoquant::datasets {

namespace {

constexpr const char* kTransformForms =
    "resize:S (shorter side) | resize:HxW | center_crop:S | center_crop:HxW | random_resized_crop:S[:min_scale] | "
    "hflip[:p] | trivial_augment | random_erasing[:p]";

std::vector<std::string> split_entry(const std::string& entry) {
  std::vector<std::string> fields;
  size_t start = 0;
  for (;;) {
    const size_t colon = entry.find(':', start);
    fields.push_back(entry.substr(start, colon - start));
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return fields;
}

bool parse_number(const std::string& text, double& value) {
  if (text.empty()) return false;
  char* end = nullptr;
  value = std::strtod(text.c_str(), &end);
  return end == text.c_str() + text.size() && std::isfinite(value);
}

// "224" -> 224 x 224 (or shorter side 224 when `shorter_side`), "256x192" -> height 256, width 192.
bool parse_size(const std::string& text, bool shorter_side, int& height, int& width) {
  const size_t x = text.find('x');
  double h = 0, w = 0;
  if (x == std::string::npos) {
    if (!parse_number(text, h) || h < 1 || h > 65535 || h != std::floor(h)) return false;
    height = static_cast<int>(h);
    width = shorter_side ? 0 : height;
    return true;
  }
  if (!parse_number(text.substr(0, x), h) || !parse_number(text.substr(x + 1), w)) return false;
  if (h < 1 || w < 1 || h > 65535 || w > 65535 || h != std::floor(h) || w != std::floor(w)) return false;
  height = static_cast<int>(h);
  width = static_cast<int>(w);
  return true;
}

double uniform(Rng& rng, double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); }
int uniform_int(Rng& rng, int lo, int hi_inclusive) {
  return std::uniform_int_distribution<int>(lo, hi_inclusive)(rng);
}

// torchvision's RandomResizedCrop.get_params: scale (min_scale, 1), ratio (3/4, 4/3).
cv::Rect sample_resized_crop(cv::Size size, double min_scale, Rng& rng) {
  const double area = static_cast<double>(size.width) * size.height;
  const double log_lo = std::log(3.0 / 4.0), log_hi = std::log(4.0 / 3.0);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * uniform(rng, min_scale, 1.0);
    const double aspect = std::exp(uniform(rng, log_lo, log_hi));
    const int w = static_cast<int>(std::lround(std::sqrt(target * aspect)));
    const int h = static_cast<int>(std::lround(std::sqrt(target / aspect)));
    if (w > 0 && h > 0 && w <= size.width && h <= size.height) {
      const int y = uniform_int(rng, 0, size.height - h);
      const int x = uniform_int(rng, 0, size.width - w);
      return {x, y, w, h};
    }
  }
  const double ratio = static_cast<double>(size.width) / size.height;
  int w = size.width, h = size.height;
  if (ratio < 3.0 / 4.0) {
    h = static_cast<int>(std::lround(w / (3.0 / 4.0)));
  } else if (ratio > 4.0 / 3.0) {
    w = static_cast<int>(std::lround(h * (4.0 / 3.0)));
  }
  return {(size.width - w) / 2, (size.height - h) / 2, w, h};
}

// The largest JPEG scale-down (8, 4, 2) that still leaves at least `min_w` x `min_h` pixels of
// a `w` x `h` region, so the decoded region is never upsampled.
int pick_reduction(double w, double h, int min_w, int min_h, int max_reduction) {
  for (int r = 8; r >= 2; r /= 2) {
    if (r <= max_reduction && w / r >= min_w && h / r >= min_h) return r;
  }
  return 1;
}

cv::Size resized_size(cv::Size size, const Transform& t) {
  if (t.width > 0) return {t.width, t.height};
  // Shorter side to t.height, as torchvision's Resize(int).
  if (size.width <= size.height) {
    return {t.height, static_cast<int>(static_cast<int64_t>(t.height) * size.height / size.width)};
  }
  return {static_cast<int>(static_cast<int64_t>(t.height) * size.width / size.height), t.height};
}

// Maps annotations through a scaling of the image by (sx, sy).
void scale_annotations(Sample& sample, double sx, double sy) {
  for (auto& p : sample.parts) {
    p.x = static_cast<float>((p.x + 0.5) * sx - 0.5);
    p.y = static_cast<float>((p.y + 0.5) * sy - 0.5);
  }
  if (sample.box) {
    auto& b = *sample.box;
    b = cv::Rect2f(static_cast<float>(b.x * sx), static_cast<float>(b.y * sy), static_cast<float>(b.width * sx),
                   static_cast<float>(b.height * sy));
  }
}

void blend(cv::Mat& image, double factor, const cv::Mat& other) {
  cv::addWeighted(image, factor, other, 1.0 - factor, 0.0, image);
}

cv::Mat grey_bgr(const cv::Mat& image) {
  cv::Mat grey, grey3;
  cv::cvtColor(image, grey, cv::COLOR_BGR2GRAY);
  cv::cvtColor(grey, grey3, cv::COLOR_GRAY2BGR);
  return grey3;
}

// TrivialAugmentWide (Müller & Hutter 2021) as torchvision 0.14 defines it: one op, uniformly
// chosen, at a uniformly chosen magnitude of 31 bins, signed for the symmetric ops.
void trivial_augment(Sample& sample, Rng& rng) {
  constexpr int kBins = 31;
  const int op = uniform_int(rng, 0, 13);
  const int bin = uniform_int(rng, 0, kBins - 1);
  const double sign = uniform_int(rng, 0, 1) == 0 ? 1.0 : -1.0;
  const double unit = bin / static_cast<double>(kBins - 1);  // 0 .. 1
  cv::Mat& image = sample.image;
  const double w = image.cols, h = image.rows;
  switch (op) {
    case 0: break;  // identity
    case 1: warp_sample(sample, cv::Matx23d(1, sign * 0.99 * unit, 0, 0, 1, 0)); break;  // shear x
    case 2: warp_sample(sample, cv::Matx23d(1, 0, 0, sign * 0.99 * unit, 1, 0)); break;  // shear y
    case 3: warp_sample(sample, cv::Matx23d(1, 0, sign * 32.0 * unit, 0, 1, 0)); break;  // translate x
    case 4: warp_sample(sample, cv::Matx23d(1, 0, 0, 0, 1, sign * 32.0 * unit)); break;  // translate y
    case 5: {
      const cv::Mat m = cv::getRotationMatrix2D(cv::Point2f((w - 1) / 2, (h - 1) / 2), sign * 135.0 * unit, 1.0);
      warp_sample(sample, cv::Matx23d(m));
      break;
    }
    case 6: image.convertTo(image, -1, 1.0 + sign * 0.99 * unit, 0.0); break;  // brightness
    case 7: blend(image, 1.0 + sign * 0.99 * unit, grey_bgr(image)); break;    // colour (saturation)
    case 8: {                                                                  // contrast
      const double f = 1.0 + sign * 0.99 * unit;
      const double mean = cv::mean(grey_bgr(image))[0];
      image.convertTo(image, -1, f, mean * (1.0 - f));
      break;
    }
    case 9: {  // sharpness: blend with PIL's smoothing kernel
      const cv::Mat kernel = (cv::Mat_<float>(3, 3) << 1, 1, 1, 1, 5, 1, 1, 1, 1) / 13.0f;
      cv::Mat smooth;
      cv::filter2D(image, smooth, -1, kernel);
      blend(image, 1.0 + sign * 0.99 * unit, smooth);
      break;
    }
    case 10: {  // posterize to 8 .. 2 bits
      const int bits = 8 - static_cast<int>(std::lround(bin / ((kBins - 1) / 6.0)));
      cv::bitwise_and(image, cv::Scalar::all(static_cast<double>((0xFF << (8 - bits)) & 0xFF)), image);
      break;
    }
    case 11: {  // solarize above a threshold from 255 down to 0
      const double threshold = 255.0 * (1.0 - unit);
      cv::Mat lut(1, 256, CV_8U);
      for (int v = 0; v < 256; ++v) lut.at<uchar>(v) = static_cast<uchar>(v >= threshold ? 255 - v : v);
      cv::LUT(image, lut, image);
      break;
    }
    case 12: {  // autocontrast per channel
      std::vector<cv::Mat> channels;
      cv::split(image, channels);
      for (auto& c : channels) {
        double lo = 0, hi = 0;
        cv::minMaxLoc(c, &lo, &hi);
        if (hi > lo) c.convertTo(c, -1, 255.0 / (hi - lo), -lo * 255.0 / (hi - lo));
      }
      cv::merge(channels, image);
      break;
    }
    default: {  // equalize per channel
      std::vector<cv::Mat> channels;
      cv::split(image, channels);
      for (auto& c : channels) cv::equalizeHist(c, c);
      cv::merge(channels, image);
      break;
    }
  }
}

// torchvision's RandomErasing (scale 0.02-0.33, ratio 0.3-3.3) with value 0 in normalised
// space, that is the mean colour in pixels.
void random_erasing(Sample& sample, const cv::Scalar& fill, Rng& rng) {
  cv::Mat& image = sample.image;
  const double area = static_cast<double>(image.cols) * image.rows;
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * uniform(rng, 0.02, 0.33);
    const double aspect = std::exp(uniform(rng, std::log(0.3), std::log(3.3)));
    const int h = static_cast<int>(std::lround(std::sqrt(target * aspect)));
    const int w = static_cast<int>(std::lround(std::sqrt(target / aspect)));
    if (h < image.rows && w < image.cols) {
      const int y = uniform_int(rng, 0, image.rows - h);
      const int x = uniform_int(rng, 0, image.cols - w);
      image(cv::Rect(x, y, w, h)).setTo(fill);
      if (!sample.part_map.empty()) sample.part_map(cv::Rect(x, y, w, h)).setTo(cv::Scalar(0));
      return;
    }
  }
}

void apply_transform(const Transform& t, Sample& sample, const cv::Scalar& fill, Rng& rng) {
  switch (t.kind) {
    case Transform::Kind::kResize:
      resize_sample(sample, resized_size(sample.image.size(), t));
      break;
    case Transform::Kind::kCenterCrop: {
      // torchvision's offsets: round((size - crop) / 2), zero padding when the image is smaller.
      const int y = static_cast<int>(std::lround((sample.image.rows - t.height) / 2.0));
      const int x = static_cast<int>(std::lround((sample.image.cols - t.width) / 2.0));
      crop_sample(sample, cv::Rect(x, y, t.width, t.height));
      break;
    }
    case Transform::Kind::kRandomResizedCrop:
      crop_sample(sample, sample_resized_crop(sample.image.size(), t.min_scale, rng));
      resize_sample(sample, cv::Size(t.width, t.height));
      break;
    case Transform::Kind::kHflip:
      if (uniform(rng, 0.0, 1.0) < t.probability) hflip_sample(sample);
      break;
    case Transform::Kind::kTrivialAugment:
      trivial_augment(sample, rng);
      break;
    case Transform::Kind::kRandomErasing:
      if (uniform(rng, 0.0, 1.0) < t.probability) random_erasing(sample, fill, rng);
      break;
  }
}

}  // namespace

absl::StatusOr<Transform> parse_transform(const std::string& entry) {
  const auto fields = split_entry(entry);
  const std::string& name = fields[0];
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(fmt::format("transform '{}': {} (forms: {})", entry, why, kTransformForms));
  };
  Transform t;
  t.entry = entry;
  auto need_args = [&](size_t lo, size_t hi) { return fields.size() - 1 >= lo && fields.size() - 1 <= hi; };
  if (name == "resize" || name == "center_crop" || name == "random_resized_crop") {
    if (!(name == "random_resized_crop" ? need_args(1, 2) : need_args(1, 1))) return bad("expects a size");
    if (!parse_size(fields[1], name == "resize", t.height, t.width)) return bad(fmt::format("bad size '{}'", fields[1]));
    t.kind = name == "resize" ? Transform::Kind::kResize
             : name == "center_crop" ? Transform::Kind::kCenterCrop : Transform::Kind::kRandomResizedCrop;
    if (fields.size() == 3 && (!parse_number(fields[2], t.min_scale) || t.min_scale <= 0 || t.min_scale > 1)) {
      return bad(fmt::format("min_scale '{}' is not in (0, 1]", fields[2]));
    }
    return t;
  }
  if (name == "hflip" || name == "random_erasing") {
    if (!need_args(0, 1)) return bad("expects at most a probability");
    t.kind = name == "hflip" ? Transform::Kind::kHflip : Transform::Kind::kRandomErasing;
    if (fields.size() == 2 && (!parse_number(fields[1], t.probability) || t.probability < 0 || t.probability > 1)) {
      return bad(fmt::format("probability '{}' is not in [0, 1]", fields[1]));
    }
    return t;
  }
  if (name == "trivial_augment") {
    if (!need_args(0, 0)) return bad("takes no argument");
    t.kind = Transform::Kind::kTrivialAugment;
    return t;
  }
  return bad("unknown transform");
}

absl::StatusOr<Pipeline> Pipeline::parse(const std::vector<std::string>& entries, const std::string& what,
                                         cv::Size source_size) {
  Pipeline pipeline;
  pipeline.height_ = source_size.height;
  pipeline.width_ = source_size.width;
  std::vector<std::string> errors;
  for (const auto& entry : entries) {
    auto t = parse_transform(entry);
    if (!t.ok()) {
      errors.push_back(fmt::format("{}: {}", what, std::string(t.status().message())));
      continue;
    }
    if (t->kind != Transform::Kind::kHflip && t->kind != Transform::Kind::kTrivialAugment &&
        t->kind != Transform::Kind::kRandomErasing) {
      // The last sizing transform fixes the output size (or leaves it open: resize by shorter side).
      pipeline.height_ = t->width > 0 ? t->height : 0;
      pipeline.width_ = t->width;
    }
    pipeline.transforms_.push_back(*t);
  }
  if (!errors.empty()) return absl::InvalidArgumentError(fmt::format("{}", fmt::join(errors, "\n")));
  if (pipeline.width_ == 0) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: the images need one fixed size: end the sizing with center_crop, random_resized_crop or resize:HxW",
        what));
  }
  return pipeline;
}

absl::Status Pipeline::run(cv::Size size, int max_reduction, const std::function<absl::StatusOr<cv::Mat>(int)>& decode,
                           const std::optional<cv::Rect>& crop, Sample& sample, Rng& rng) const {
  const cv::Size base = crop ? crop->size() : size;
  // Plan the first transform before decoding, so its scale-down can happen inside the decoder.
  std::optional<cv::Rect> first_crop;
  int reduction = 1;
  if (!transforms_.empty()) {
    const Transform& t = transforms_.front();
    if (t.kind == Transform::Kind::kRandomResizedCrop) {
      first_crop = sample_resized_crop(base, t.min_scale, rng);
      reduction = pick_reduction(first_crop->width, first_crop->height, t.width, t.height, max_reduction);
    } else if (t.kind == Transform::Kind::kResize) {
      const cv::Size target = resized_size(base, t);
      reduction = pick_reduction(base.width, base.height, target.width, target.height, max_reduction);
    }
  }
  auto decoded = decode(reduction);
  if (!decoded.ok()) return decoded.status();
  sample.image = std::move(*decoded);
  const double sx = static_cast<double>(sample.image.cols) / size.width;
  const double sy = static_cast<double>(sample.image.rows) / size.height;
  if (reduction > 1 || sample.image.size() != size) scale_annotations(sample, sx, sy);
  if (!sample.part_map.empty() && sample.part_map.size() != sample.image.size()) {
    cv::Mat map;
    cv::resize(sample.part_map, map, sample.image.size(), 0, 0, cv::INTER_NEAREST);
    sample.part_map = map;
  }
  auto scaled = [&](const cv::Rect& r, double ox, double oy) {
    return cv::Rect(static_cast<int>(std::lround(ox + r.x * sx)), static_cast<int>(std::lround(oy + r.y * sy)),
                    std::max(1, static_cast<int>(std::lround(r.width * sx))),
                    std::max(1, static_cast<int>(std::lround(r.height * sy))));
  };
  if (crop) crop_sample(sample, scaled(*crop, 0, 0));
  for (size_t i = 0; i < transforms_.size(); ++i) {
    if (i == 0 && first_crop) {
      crop_sample(sample, scaled(*first_crop, 0, 0));
      resize_sample(sample, cv::Size(transforms_[0].width, transforms_[0].height));
    } else {
      apply_transform(transforms_[i], sample, erase_fill_, rng);
    }
  }
  if (sample.image.rows != height_ || sample.image.cols != width_) {
    return absl::InternalError(fmt::format("transform produced {}x{}, expected {}x{}", sample.image.rows,
                                           sample.image.cols, height_, width_));
  }
  return absl::OkStatus();
}

void to_normalized_chw(const cv::Mat& image, const double mean[3], const double std[3], float* out) {
  // One table per output channel: the per-pixel work is three lookups.
  float lut[3][256];
  for (int c = 0; c < 3; ++c) {
    for (int v = 0; v < 256; ++v) lut[c][v] = static_cast<float>((v / 255.0 - mean[c]) / std[c]);
  }
  const int h = image.rows, w = image.cols;
  float* r = out;
  float* g = out + static_cast<ptrdiff_t>(h) * w;
  float* b = g + static_cast<ptrdiff_t>(h) * w;
  for (int y = 0; y < h; ++y) {
    const uchar* p = image.ptr<uchar>(y);
    const ptrdiff_t row = static_cast<ptrdiff_t>(y) * w;
    for (int x = 0; x < w; ++x) {
      b[row + x] = lut[2][p[3 * x]];
      g[row + x] = lut[1][p[3 * x + 1]];
      r[row + x] = lut[0][p[3 * x + 2]];
    }
  }
}

void crop_sample(Sample& sample, const cv::Rect& rect) {
  const cv::Rect inside = rect & cv::Rect(0, 0, sample.image.cols, sample.image.rows);
  if (inside == rect) {
    sample.image = sample.image(rect);
  } else {
    cv::Mat padded(rect.height, rect.width, sample.image.type(), cv::Scalar::all(0));
    if (inside.area() > 0) sample.image(inside).copyTo(padded(inside - rect.tl()));
    sample.image = padded;
  }
  if (!sample.part_map.empty()) {
    if (inside == rect) {
      sample.part_map = sample.part_map(rect);
    } else {
      cv::Mat padded(rect.height, rect.width, CV_32S, cv::Scalar(0));
      if (inside.area() > 0) sample.part_map(inside).copyTo(padded(inside - rect.tl()));
      sample.part_map = padded;
    }
  }
  for (auto& p : sample.parts) {
    p.x -= static_cast<float>(rect.x);
    p.y -= static_cast<float>(rect.y);
  }
  if (sample.box) {
    sample.box->x -= static_cast<float>(rect.x);
    sample.box->y -= static_cast<float>(rect.y);
  }
  clip_annotations(sample);
}

void resize_sample(Sample& sample, cv::Size size) {
  const cv::Size from = sample.image.size();
  if (from == size) return;
  // Area averaging when shrinking more than 2x (as PIL's antialiased resize), bilinear otherwise.
  const bool shrink_much = size.width * 2 < from.width && size.height * 2 < from.height;
  cv::Mat resized;
  cv::resize(sample.image, resized, size, 0, 0, shrink_much ? cv::INTER_AREA : cv::INTER_LINEAR);
  sample.image = resized;
  if (!sample.part_map.empty()) {
    cv::Mat map;
    cv::resize(sample.part_map, map, size, 0, 0, cv::INTER_NEAREST);
    sample.part_map = map;
  }
  scale_annotations(sample, static_cast<double>(size.width) / from.width,
                    static_cast<double>(size.height) / from.height);
}

void hflip_sample(Sample& sample) {
  cv::Mat flipped;
  cv::flip(sample.image, flipped, 1);
  sample.image = flipped;
  if (!sample.part_map.empty()) {
    cv::Mat map;
    cv::flip(sample.part_map, map, 1);
    sample.part_map = map;
  }
  const float w = static_cast<float>(sample.image.cols);
  for (auto& p : sample.parts) p.x = w - 1.0f - p.x;
  if (sample.box) sample.box->x = w - (sample.box->x + sample.box->width);
}

void warp_sample(Sample& sample, const cv::Matx23d& m) {
  cv::Mat warped;
  // Nearest neighbour and zero fill, as torchvision's TrivialAugmentWide.
  cv::warpAffine(sample.image, warped, m, sample.image.size(), cv::INTER_NEAREST, cv::BORDER_CONSTANT,
                 cv::Scalar::all(0));
  sample.image = warped;
  if (!sample.part_map.empty()) {
    cv::Mat part_map;
    cv::warpAffine(sample.part_map, part_map, m, sample.part_map.size(), cv::INTER_NEAREST, cv::BORDER_CONSTANT,
                   cv::Scalar(0));
    sample.part_map = part_map;
  }
  auto map = [&](double x, double y) {
    return cv::Point2d(m(0, 0) * x + m(0, 1) * y + m(0, 2), m(1, 0) * x + m(1, 1) * y + m(1, 2));
  };
  for (auto& p : sample.parts) {
    const auto q = map(p.x, p.y);
    p.x = static_cast<float>(q.x);
    p.y = static_cast<float>(q.y);
  }
  if (sample.box) {
    // The box's corners in pixel-centre coordinates, mapped, and their bounding box.
    const auto& b = *sample.box;
    double x0 = 1e30, y0 = 1e30, x1 = -1e30, y1 = -1e30;
    for (double cx : {b.x - 0.5, b.x + b.width - 0.5}) {
      for (double cy : {b.y - 0.5, b.y + b.height - 0.5}) {
        const auto q = map(cx, cy);
        x0 = std::min(x0, q.x), y0 = std::min(y0, q.y), x1 = std::max(x1, q.x), y1 = std::max(y1, q.y);
      }
    }
    sample.box = cv::Rect2f(static_cast<float>(x0 + 0.5), static_cast<float>(y0 + 0.5), static_cast<float>(x1 - x0),
                            static_cast<float>(y1 - y0));
  }
  clip_annotations(sample);
}

void clip_annotations(Sample& sample) {
  const float w = static_cast<float>(sample.image.cols), h = static_cast<float>(sample.image.rows);
  for (auto& p : sample.parts) {
    if (p.x < -0.5f || p.y < -0.5f || p.x >= w - 0.5f || p.y >= h - 0.5f) p.visible = false;
  }
  if (sample.box) *sample.box &= cv::Rect2f(0, 0, w, h);
}

}  // namespace protoquant::datasets
