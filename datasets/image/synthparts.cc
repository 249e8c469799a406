#include "synthparts.h"

#include <algorithm>
#include <cmath>
#include <set>

#include <fmt/format.h>
#include <opencv2/imgproc.hpp>

#include "protoquant/status.h"

namespace protoquant::datasets {

namespace {

constexpr const char* kShapes[] = {"circle", "square", "triangle", "diamond", "cross", "ring", "star", "hexagon"};
constexpr const char* kTextures[] = {"solid", "stripes", "checker", "dots"};
constexpr int64_t kNumShapes = 8, kNumTextures = 4;

uint64_t mix_seed(uint64_t a, uint64_t b) {
  uint64_t x = a ^ (b + 0x9E3779B97F4A7C15ULL + (a << 6) + (a >> 2));
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

double unit(Rng& rng) { return std::uniform_real_distribution<double>(0.0, 1.0)(rng); }

// A saturated colour per vocabulary part, hues spread by the golden ratio so neighbours differ.
cv::Scalar part_colour(int64_t part) {
  const double hue = std::fmod(static_cast<double>(part) * 0.618033988749895, 1.0) * 180.0;
  cv::Mat hsv(1, 1, CV_8UC3, cv::Scalar(hue, 230, 230)), bgr;
  cv::cvtColor(hsv, bgr, cv::COLOR_HSV2BGR);
  const auto p = bgr.at<cv::Vec3b>(0, 0);
  return {static_cast<double>(p[0]), static_cast<double>(p[1]), static_cast<double>(p[2])};
}

// Mask of shape `shape` filling a (2r+1)^2 square.
cv::Mat shape_mask(int64_t shape, int r) {
  const int n = 2 * r + 1;
  cv::Mat mask(n, n, CV_8U, cv::Scalar(0));
  const cv::Point c(r, r);
  auto polygon = [&](int corners, double rotation, double inner) {
    std::vector<cv::Point> points;
    const int count = inner > 0 ? 2 * corners : corners;
    for (int k = 0; k < count; ++k) {
      const double radius = (inner > 0 && k % 2 == 1) ? r * inner : r;
      const double angle = rotation + 2 * M_PI * k / count;
      points.emplace_back(c.x + static_cast<int>(std::lround(radius * std::cos(angle))),
                          c.y + static_cast<int>(std::lround(radius * std::sin(angle))));
    }
    cv::fillPoly(mask, std::vector<std::vector<cv::Point>>{points}, cv::Scalar(255));
  };
  switch (shape) {
    case 0: cv::circle(mask, c, r, cv::Scalar(255), cv::FILLED); break;
    case 1: cv::rectangle(mask, cv::Rect(r / 5, r / 5, n - 2 * (r / 5), n - 2 * (r / 5)), cv::Scalar(255), cv::FILLED); break;
    case 2: polygon(3, -M_PI / 2, 0); break;
    case 3: polygon(4, 0, 0); break;
    case 4:
      cv::rectangle(mask, cv::Rect(r - r / 3, 0, 2 * (r / 3) + 1, n), cv::Scalar(255), cv::FILLED);
      cv::rectangle(mask, cv::Rect(0, r - r / 3, n, 2 * (r / 3) + 1), cv::Scalar(255), cv::FILLED);
      break;
    case 5:
      cv::circle(mask, c, r, cv::Scalar(255), cv::FILLED);
      cv::circle(mask, c, r / 2, cv::Scalar(0), cv::FILLED);
      break;
    case 6: polygon(5, -M_PI / 2, 0.45); break;
    default: polygon(6, 0, 0); break;
  }
  return mask;
}

// The part's colour pattern over a (2r+1)^2 square.
cv::Mat texture(int64_t kind, int r, const cv::Scalar& colour) {
  const int n = 2 * r + 1;
  const cv::Scalar dark = colour * 0.35;
  cv::Mat out(n, n, CV_8UC3, colour);
  const int period = std::max(2, r / 2);
  for (int y = 0; y < n; ++y) {
    auto* row = out.ptr<cv::Vec3b>(y);
    for (int x = 0; x < n; ++x) {
      bool second = false;
      if (kind == 1) second = ((x + y) / period) % 2 == 1;                      // diagonal stripes
      if (kind == 2) second = ((x / period) + (y / period)) % 2 == 1;           // checker
      if (kind == 3) {                                                          // dots
        const int dx = x % period - period / 2, dy = y % period - period / 2;
        second = dx * dx + dy * dy <= (period * period) / 9;
      }
      if (second) row[x] = cv::Vec3b(static_cast<uchar>(dark[0]), static_cast<uchar>(dark[1]), static_cast<uchar>(dark[2]));
    }
  }
  return out;
}

// Distractors: lines, ellipses and rectangles in muted colours, then pixel noise. Object k is
// painted into `map` (when there is one) as -(k + 1), unless it is `removed` (its random draws
// are made all the same). Returns the number of objects.
int64_t draw_clutter(cv::Mat& image, cv::Mat& map, double clutter, int64_t removed, Rng& rng) {
  const int s = image.cols;
  const int count = static_cast<int>(std::lround(clutter * 30.0 * (s / 64.0) * (s / 64.0)));
  auto muted = [&]() {
    const double g = 60 + 140 * unit(rng);
    return cv::Scalar(g + 30 * (unit(rng) - 0.5), g + 30 * (unit(rng) - 0.5), g + 30 * (unit(rng) - 0.5));
  };
  auto point = [&]() { return cv::Point(static_cast<int>(unit(rng) * s), static_cast<int>(unit(rng) * s)); };
  for (int k = 0; k < count; ++k) {
    const int kind = static_cast<int>(unit(rng) * 3);
    const int extent = std::max(2, static_cast<int>(s * (0.03 + 0.12 * unit(rng))));
    const bool drawn = k != removed, mapped = drawn && !map.empty();
    const cv::Scalar id(-(k + 1));
    // Each object's values are drawn last argument first: the order in which GCC evaluated the
    // one-call form this generator first had, which the content digest test pins.
    if (kind == 0) {
      const cv::Scalar colour = muted();
      const cv::Point to = point();
      const cv::Point from = point();
      if (drawn) cv::line(image, from, to, colour, std::max(1, s / 64));
      if (mapped) cv::line(map, from, to, id, std::max(1, s / 64));
    }
    if (kind == 1) {
      const cv::Scalar colour = muted();
      const double angle = unit(rng) * 180;
      const cv::Point centre = point();
      const cv::Size axes(extent, extent / 2 + 1);
      if (drawn) cv::ellipse(image, centre, axes, angle, 0, 360, colour, cv::FILLED);
      if (mapped) cv::ellipse(map, centre, axes, angle, 0, 360, id, cv::FILLED);
    }
    if (kind == 2) {
      const cv::Scalar colour = muted();
      const cv::Rect rect(point(), cv::Size(extent, extent));
      if (drawn) cv::rectangle(image, rect, colour, cv::FILLED);
      if (mapped) cv::rectangle(map, rect, id, cv::FILLED);
    }
  }
  if (clutter > 0) {
    // OpenCV's own generator, seeded from ours: cv::randn would use the thread's global state.
    cv::RNG noise_rng(rng());
    cv::Mat noise(image.size(), CV_16SC3);
    noise_rng.fill(noise, cv::RNG::NORMAL, cv::Scalar::all(0), cv::Scalar::all(25.0 * clutter));
    cv::Mat widened;
    image.convertTo(widened, CV_16SC3);
    widened += noise;
    widened.convertTo(image, CV_8UC3);
  }
  return count;
}

uint64_t split_seed(const std::string& split) { return split == "train" ? 0x7472ULL : 0x7465ULL; }

}  // namespace

absl::StatusOr<SynthParts> SynthParts::create(const SynthPartsConfig& config) {
  if (config.classes < 1 || config.parts < 1 || config.parts_per_class < 1 || config.image_size < 16) {
    return absl::InvalidArgumentError("synthparts: classes, parts, parts_per_class >= 1 and image_size >= 16 required");
  }
  if (config.parts_per_class > config.parts) {
    return absl::InvalidArgumentError(fmt::format("synthparts: parts_per_class = {} exceeds the vocabulary of {} parts",
                                                  config.parts_per_class, config.parts));
  }
  // Distinct classes need enough combinations: C(parts, parts_per_class) >= classes.
  double combinations = 1;
  for (int64_t k = 0; k < config.parts_per_class; ++k) {
    combinations = combinations * static_cast<double>(config.parts - k) / static_cast<double>(k + 1);
  }
  if (combinations < static_cast<double>(config.classes)) {
    return absl::InvalidArgumentError(fmt::format(
        "synthparts: {} parts taken {} at a time give only {} distinct classes, fewer than classes = {}", config.parts,
        config.parts_per_class, static_cast<int64_t>(combinations), config.classes));
  }
  SynthParts data;
  data.config_ = config;
  Rng rng(mix_seed(config.seed, 0xC1A55ULL));
  std::set<std::vector<int64_t>> used;
  std::vector<int64_t> vocabulary(static_cast<size_t>(config.parts));
  for (int64_t p = 0; p < config.parts; ++p) vocabulary[static_cast<size_t>(p)] = p;
  while (static_cast<int64_t>(data.class_parts_.size()) < config.classes) {
    std::shuffle(vocabulary.begin(), vocabulary.end(), rng);
    std::vector<int64_t> chosen(vocabulary.begin(), vocabulary.begin() + config.parts_per_class);
    std::sort(chosen.begin(), chosen.end());
    if (used.insert(chosen).second) data.class_parts_.push_back(chosen);
  }
  return data;
}

int64_t SynthParts::size(const std::string& split) const {
  if (split == "train") return config_.classes * config_.train_per_class;
  if (split == "test") return config_.classes * config_.test_per_class;
  return 0;
}

std::vector<std::string> SynthParts::part_names() const {
  std::vector<std::string> names;
  for (int64_t p = 0; p < config_.parts; ++p) {
    names.push_back(fmt::format("{}_{}_{}", kShapes[p % kNumShapes], kTextures[(p / kNumShapes) % kNumTextures], p));
  }
  return names;
}

std::vector<std::string> SynthParts::class_names() const {
  std::vector<std::string> names;
  for (int64_t c = 0; c < config_.classes; ++c) names.push_back(fmt::format("class_{:03d}", c));
  return names;
}

SynthImage SynthParts::draw(const std::string& split, int64_t index, const Intervention* intervention) const {
  const int s = static_cast<int>(config_.image_size);
  Rng rng(mix_seed(mix_seed(config_.seed, split_seed(split)), static_cast<uint64_t>(index)));
  SynthImage out;
  out.label = index % config_.classes;
  const cv::Scalar background(40 + 150 * unit(rng), 40 + 150 * unit(rng), 40 + 150 * unit(rng));
  out.image = cv::Mat(s, s, CV_8UC3, background);
  // Training and evaluation draw no part map: only a re-render needs one.
  if (intervention != nullptr) out.part_map = cv::Mat(s, s, CV_32S, cv::Scalar(0));
  const Intervention none;
  const Intervention& what = intervention != nullptr ? *intervention : none;
  out.objects = draw_clutter(out.image, out.part_map, config_.clutter, what.removed_object, rng);
  const auto& removed = what.removed_parts;
  out.parts.assign(static_cast<size_t>(config_.parts), Keypoint{});
  out.part_boxes.assign(static_cast<size_t>(config_.parts), cv::Rect());
  // Parts of radius ~ s/10, placed without overlapping where possible.
  std::vector<cv::Point> centres;
  cv::Rect drawn_union;
  for (int64_t part : class_parts(out.label)) {
    const int r = std::max(3, static_cast<int>(std::lround(s * (0.08 + 0.04 * unit(rng)))));
    cv::Point c;
    for (int attempt = 0; attempt < 50; ++attempt) {
      c = cv::Point(r + static_cast<int>(unit(rng) * (s - 2 * r - 1)), r + static_cast<int>(unit(rng) * (s - 2 * r - 1)));
      bool clear = true;
      for (const auto& other : centres) clear &= cv::norm(other - c) >= 2.2 * r;
      if (clear) break;
    }
    const bool missing = unit(rng) < config_.missing;
    const bool occluded = unit(rng) < config_.occlusion;
    if (missing) continue;
    // A removed part keeps its place (later parts are placed around it) and its occluder.
    centres.push_back(c);
    const cv::Rect roi(c.x - r, c.y - r, 2 * r + 1, 2 * r + 1);
    if (std::find(removed.begin(), removed.end(), part) == removed.end()) {
      const cv::Mat mask = shape_mask(part % kNumShapes, r);
      texture((part / kNumShapes) % kNumTextures, r, part_colour(part)).copyTo(out.image(roi), mask);
      if (!out.part_map.empty()) out.part_map(roi).setTo(cv::Scalar(static_cast<int>(part + 1)), mask);
      auto& keypoint = out.parts[static_cast<size_t>(part)];
      keypoint = {static_cast<float>(c.x), static_cast<float>(c.y), !occluded};
      out.part_boxes[static_cast<size_t>(part)] = roi;
      drawn_union = drawn_union.area() == 0 ? roi : (drawn_union | roi);
    }
    if (occluded) {
      // A muted block over the part's centre region hides it.
      const int half = std::max(2, (2 * r) / 3);
      const cv::Rect block(c.x - half, c.y - half, 2 * half + 1, 2 * half + 1);
      cv::rectangle(out.image, block, cv::Scalar(90 + 60 * unit(rng), 90 + 60 * unit(rng), 90 + 60 * unit(rng)),
                    cv::FILLED);
      if (!out.part_map.empty()) cv::rectangle(out.part_map, block, cv::Scalar(0), cv::FILLED);
    }
  }
  if (drawn_union.area() == 0) drawn_union = cv::Rect(0, 0, s, s);
  out.box = cv::Rect2f(static_cast<float>(drawn_union.x), static_cast<float>(drawn_union.y),
                       static_cast<float>(drawn_union.width), static_cast<float>(drawn_union.height));
  return out;
}

ParamSchema SynthPartsDataset::schema() {
  ParamSchema schema{
      ParamSpec::Int("classes", 10, "number of classes").range(1, 10000),
      ParamSpec::Int("train_per_class", 20, "training images per class").range(1, 1000000),
      ParamSpec::Int("test_per_class", 10, "test images per class").range(1, 1000000),
      ParamSpec::Int("parts", 12, "vocabulary of distinct textured shapes (the P part keypoints)").range(1, 1024),
      ParamSpec::Int("parts_per_class", 4, "parts that make up a class").range(1, 1024),
      ParamSpec::Int("image_size", 64, "generated images are image_size x image_size").range(16, 4096),
      ParamSpec::Float("clutter", 0.5, "background distractors and noise, 0 (none) to 1").range(0, 1),
      ParamSpec::Float("missing", 0.1, "probability that a part of the class is not drawn").range(0, 1),
      ParamSpec::Float("occlusion", 0.1, "probability that a drawn part is covered").range(0, 1),
      ParamSpec::Int("seed", 0, "content seed: the same seed gives the same images").min(0)};
  return schema.extend(image_param_schema({"hflip"}, {}));
}

absl::StatusOr<std::shared_ptr<SynthPartsDataset>> SynthPartsDataset::open(const Params& params,
                                                                           const BuildContext& context) {
  SynthPartsConfig config;
  config.classes = params.get_int("classes");
  config.train_per_class = params.get_int("train_per_class");
  config.test_per_class = params.get_int("test_per_class");
  config.parts = params.get_int("parts");
  config.parts_per_class = params.get_int("parts_per_class");
  config.image_size = params.get_int("image_size");
  config.clutter = params.get_float("clutter");
  config.missing = params.get_float("missing");
  config.occlusion = params.get_float("occlusion");
  config.seed = static_cast<uint64_t>(params.get_int("seed"));
  PQ_ASSIGN_OR_RETURN(SynthParts generator, SynthParts::create(config));
  const int s = static_cast<int>(config.image_size);
  auto options = ImageOptions::from(params, context, cv::Size(s, s));
  if (!options.ok()) return absl::InvalidArgumentError(fmt::format("synthparts: {}", std::string(options.status().message())));

  DatasetInfo info;
  info.name = "synthparts";
  info.class_names = generator.class_names();
  info.num_classes = config.classes;
  info.splits = {"train", "test"};
  info.has_parts = true;
  info.has_boxes = true;
  info.part_names = generator.part_names();
  info.has_interventions = true;
  for (int64_t c = 0; c < config.classes; ++c) info.class_parts.push_back(generator.class_parts(c));
  std::map<std::string, std::vector<ImageRecord>> splits;
  for (const auto& split : info.splits) {
    auto& records = splits[split];
    records.resize(static_cast<size_t>(generator.size(split)));
    for (size_t i = 0; i < records.size(); ++i) records[i].label = static_cast<int64_t>(i) % config.classes;
  }
  const std::string identity = fmt::format(
      "synthparts|classes={}|train={}|test={}|parts={}|per_class={}|size={}|clutter={}|missing={}|occlusion={}|seed={}|{}",
      config.classes, config.train_per_class, config.test_per_class, config.parts, config.parts_per_class,
      config.image_size, config.clutter, config.missing, config.occlusion, config.seed, options->summary);
  auto pool = std::make_shared<WorkerPool>(options->threads);
  return std::shared_ptr<SynthPartsDataset>(new SynthPartsDataset(std::move(info), std::move(*options), std::move(splits),
                                                                  identity, std::move(pool), std::move(generator)));
}

namespace {

void to_sample(SynthImage drawn, Sample& sample) {
  sample.image = drawn.image;
  sample.parts = std::move(drawn.parts);
  sample.box = drawn.box;
  sample.part_map = drawn.part_map;
}

}  // namespace

absl::Status SynthPartsDataset::generate(const std::string& split, int64_t index, Sample& sample) const {
  to_sample(generator_.draw(split, index), sample);
  return absl::OkStatus();
}

absl::Status SynthPartsDataset::generate_intervention(const std::string& split, int64_t index,
                                                      const Intervention& intervention, Sample& sample) const {
  to_sample(generator_.draw(split, index, &intervention), sample);
  return absl::OkStatus();
}

}  // namespace protoquant::datasets
