#include "cub200.h"

#include <cmath>
#include <fstream>
#include <map>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "protoquant/status.h"

namespace protoquant::datasets {
namespace fs = std::filesystem;

namespace {

// One CUB metadata file: whitespace-separated fields per line, the first an integer id. `last`
// keeps the rest of the line as one field (class and part names may contain spaces).
class MetadataFile {
 public:
  static absl::StatusOr<MetadataFile> read(const fs::path& path) {
    std::ifstream in(path);
    if (!in) return absl::NotFoundError(fmt::format("{}: cannot open (CUB metadata file)", path.string()));
    MetadataFile file;
    file.path_ = path;
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      file.lines_.push_back(line);
    }
    return file;
  }

  // Calls fn(line_number, fields) for each non-empty line, which must have at least `min_fields`
  // fields; with `rest_as_last`, field min_fields - 1 holds the rest of the line.
  absl::Status each(size_t min_fields, bool rest_as_last,
                    const std::function<absl::Status(size_t, const std::vector<std::string>&)>& fn) const {
    for (size_t n = 0; n < lines_.size(); ++n) {
      std::vector<std::string> fields;
      const std::string& line = lines_[n];
      size_t pos = 0;
      while (pos < line.size()) {
        const size_t start = line.find_first_not_of(" \t", pos);
        if (start == std::string::npos) break;
        if (rest_as_last && fields.size() + 1 == min_fields) {
          fields.push_back(line.substr(start, line.find_last_not_of(" \t") + 1 - start));
          break;
        }
        const size_t end = line.find_first_of(" \t", start);
        fields.push_back(line.substr(start, end == std::string::npos ? std::string::npos : end - start));
        pos = end == std::string::npos ? line.size() : end;
      }
      if (fields.empty()) continue;
      if (fields.size() < min_fields) {
        return error(n + 1, fmt::format("expected {} fields, got {}", min_fields, fields.size()));
      }
      PQ_RETURN_IF_ERROR(fn(n + 1, fields));
    }
    return absl::OkStatus();
  }

  absl::Status error(size_t line, const std::string& message) const {
    return absl::InvalidArgumentError(fmt::format("{}:{}: {}", path_.string(), line, message));
  }

  absl::StatusOr<int64_t> integer(size_t line, const std::string& text) const {
    char* end = nullptr;
    const long long value = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0') return error(line, fmt::format("'{}' is not an integer", text));
    return static_cast<int64_t>(value);
  }

  absl::StatusOr<float> number(size_t line, const std::string& text) const {
    char* end = nullptr;
    const double value = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || !std::isfinite(value)) {
      return error(line, fmt::format("'{}' is not a number", text));
    }
    return static_cast<float>(value);
  }

 private:
  fs::path path_;
  std::vector<std::string> lines_;
};

struct CubImage {
  std::string name;
  int64_t label = -1;
  int is_train = -1;
  std::optional<cv::Rect2f> box;
  std::vector<Keypoint> parts;
};

}  // namespace

ParamSchema Cub200Dataset::schema() {
  ParamSchema schema{
      ParamSpec::Required("root", ParamType::kString, "the CUB_200_2011 folder (images.txt, images/, parts/ ...)").path(),
      ParamSpec::Bool("crop_to_box", false, "cut each image to its bounding box before the transforms"),
      ParamSpec::Bool("parts", true, "read the part keypoints (parts/parts.txt, parts/part_locs.txt) when present")};
  return schema.extend(image_param_schema({"random_resized_crop:224", "hflip"}, {"resize:256", "center_crop:224"}));
}

absl::StatusOr<std::shared_ptr<Cub200Dataset>> Cub200Dataset::open(const Params& params, const BuildContext& context) {
  const fs::path root = params.get_string("root");
  if (!fs::is_directory(root)) return absl::NotFoundError(fmt::format("{}: dataset folder not found", root.string()));
  auto options = ImageOptions::from(params, context);
  if (!options.ok()) return absl::InvalidArgumentError(fmt::format("{}: {}", root.string(), std::string(options.status().message())));
  const bool crop_to_box = params.get_bool("crop_to_box");

  std::map<int64_t, CubImage> images;  // by CUB image id, in id order
  PQ_ASSIGN_OR_RETURN(auto images_txt, MetadataFile::read(root / "images.txt"));
  PQ_RETURN_IF_ERROR(images_txt.each(2, true, [&](size_t line, const std::vector<std::string>& f) -> absl::Status {
    PQ_ASSIGN_OR_RETURN(int64_t id, images_txt.integer(line, f[0]));
    if (!images.emplace(id, CubImage{f[1]}).second) return images_txt.error(line, fmt::format("image id {} listed twice", id));
    return absl::OkStatus();
  }));
  if (images.empty()) return absl::InvalidArgumentError(fmt::format("{}: no images listed", (root / "images.txt").string()));
  // Every other file refers to images.txt's ids.
  auto image_at = [&](const MetadataFile& file, size_t line, const std::string& text) -> absl::StatusOr<CubImage*> {
    PQ_ASSIGN_OR_RETURN(int64_t id, file.integer(line, text));
    auto it = images.find(id);
    if (it == images.end()) return file.error(line, fmt::format("image id {} is not in images.txt", id));
    return &it->second;
  };

  PQ_ASSIGN_OR_RETURN(auto labels_txt, MetadataFile::read(root / "image_class_labels.txt"));
  int64_t num_classes = 0;
  PQ_RETURN_IF_ERROR(labels_txt.each(2, false, [&](size_t line, const std::vector<std::string>& f) -> absl::Status {
    PQ_ASSIGN_OR_RETURN(CubImage * image, image_at(labels_txt, line, f[0]));
    PQ_ASSIGN_OR_RETURN(int64_t label, labels_txt.integer(line, f[1]));
    if (label < 1) return labels_txt.error(line, fmt::format("class id {} (ids start at 1)", label));
    image->label = label - 1;
    num_classes = std::max(num_classes, label);
    return absl::OkStatus();
  }));
  PQ_ASSIGN_OR_RETURN(auto split_txt, MetadataFile::read(root / "train_test_split.txt"));
  PQ_RETURN_IF_ERROR(split_txt.each(2, false, [&](size_t line, const std::vector<std::string>& f) -> absl::Status {
    PQ_ASSIGN_OR_RETURN(CubImage * image, image_at(split_txt, line, f[0]));
    PQ_ASSIGN_OR_RETURN(int64_t flag, split_txt.integer(line, f[1]));
    if (flag != 0 && flag != 1) return split_txt.error(line, fmt::format("is_training_image must be 0 or 1, got {}", flag));
    image->is_train = static_cast<int>(flag);
    return absl::OkStatus();
  }));
  const bool has_boxes = fs::exists(root / "bounding_boxes.txt");
  if (crop_to_box && !has_boxes) {
    return absl::NotFoundError(fmt::format("{}: crop_to_box needs this file", (root / "bounding_boxes.txt").string()));
  }
  if (has_boxes) {
    PQ_ASSIGN_OR_RETURN(auto boxes_txt, MetadataFile::read(root / "bounding_boxes.txt"));
    PQ_RETURN_IF_ERROR(boxes_txt.each(5, false, [&](size_t line, const std::vector<std::string>& f) -> absl::Status {
      PQ_ASSIGN_OR_RETURN(CubImage * image, image_at(boxes_txt, line, f[0]));
      float v[4];
      for (int k = 0; k < 4; ++k) {
        PQ_ASSIGN_OR_RETURN(v[k], boxes_txt.number(line, f[static_cast<size_t>(k) + 1]));
      }
      if (v[2] <= 0 || v[3] <= 0) return boxes_txt.error(line, fmt::format("box of size {} x {}", v[2], v[3]));
      image->box = cv::Rect2f(v[0], v[1], v[2], v[3]);
      return absl::OkStatus();
    }));
  }
  std::vector<std::string> part_names;
  const bool has_parts = params.get_bool("parts") && fs::exists(root / "parts" / "parts.txt") &&
                         fs::exists(root / "parts" / "part_locs.txt");
  if (has_parts) {
    PQ_ASSIGN_OR_RETURN(auto parts_txt, MetadataFile::read(root / "parts" / "parts.txt"));
    PQ_RETURN_IF_ERROR(parts_txt.each(2, true, [&](size_t line, const std::vector<std::string>& f) -> absl::Status {
      PQ_ASSIGN_OR_RETURN(int64_t id, parts_txt.integer(line, f[0]));
      if (id != static_cast<int64_t>(part_names.size()) + 1) {
        return parts_txt.error(line, fmt::format("part id {} out of order (expected {})", id, part_names.size() + 1));
      }
      part_names.push_back(f[1]);
      return absl::OkStatus();
    }));
    for (auto& [id, image] : images) image.parts.assign(part_names.size(), Keypoint{});
    PQ_ASSIGN_OR_RETURN(auto locs_txt, MetadataFile::read(root / "parts" / "part_locs.txt"));
    PQ_RETURN_IF_ERROR(locs_txt.each(5, false, [&](size_t line, const std::vector<std::string>& f) -> absl::Status {
      PQ_ASSIGN_OR_RETURN(CubImage * image, image_at(locs_txt, line, f[0]));
      PQ_ASSIGN_OR_RETURN(int64_t part, locs_txt.integer(line, f[1]));
      if (part < 1 || part > static_cast<int64_t>(part_names.size())) {
        return locs_txt.error(line, fmt::format("part id {} is not in parts.txt", part));
      }
      Keypoint& k = image->parts[static_cast<size_t>(part - 1)];
      PQ_ASSIGN_OR_RETURN(k.x, locs_txt.number(line, f[2]));
      PQ_ASSIGN_OR_RETURN(k.y, locs_txt.number(line, f[3]));
      PQ_ASSIGN_OR_RETURN(int64_t visible, locs_txt.integer(line, f[4]));
      k.visible = visible != 0;
      return absl::OkStatus();
    }));
  }
  std::vector<std::string> class_names(static_cast<size_t>(num_classes));
  if (fs::exists(root / "classes.txt")) {
    PQ_ASSIGN_OR_RETURN(auto classes_txt, MetadataFile::read(root / "classes.txt"));
    PQ_RETURN_IF_ERROR(classes_txt.each(2, true, [&](size_t line, const std::vector<std::string>& f) -> absl::Status {
      PQ_ASSIGN_OR_RETURN(int64_t id, classes_txt.integer(line, f[0]));
      if (id >= 1 && id <= num_classes) class_names[static_cast<size_t>(id - 1)] = f[1];
      return absl::OkStatus();
    }));
  }
  // Without classes.txt, a class is named by its image folder (CUB's "001.Black_footed_Albatross").
  for (const auto& [id, image] : images) {
    if (image.label < 0) {
      return absl::InvalidArgumentError(
          fmt::format("{}: no class for image id {}", (root / "image_class_labels.txt").string(), id));
    }
    if (image.is_train < 0) {
      return absl::InvalidArgumentError(
          fmt::format("{}: no split for image id {}", (root / "train_test_split.txt").string(), id));
    }
    auto& name = class_names[static_cast<size_t>(image.label)];
    if (name.empty()) name = fs::path(image.name).parent_path().filename().string();
    if (name.empty()) name = std::to_string(image.label);
  }

  // Records, then the per-file checks (present, intact, annotations inside the image).
  std::vector<ImageRecord> records;
  std::vector<int> is_train;
  for (const auto& [id, image] : images) {
    ImageRecord record;
    record.file = (root / "images" / image.name).string();
    record.label = image.label;
    record.parts = image.parts;
    record.box = image.box;
    records.push_back(std::move(record));
    is_train.push_back(image.is_train);
  }
  auto pool = std::make_shared<WorkerPool>(options->threads);
  const auto headers = probe_records(records, *pool);
  DatasetInfo info;
  info.name = "cub200:" + fs::absolute(root).lexically_normal().filename().string();
  BadSamples bad;
  std::map<std::string, std::vector<ImageRecord>> splits{{"train", {}}, {"test", {}}};
  for (size_t i = 0; i < records.size(); ++i) {
    ImageRecord& record = records[i];
    const std::string split = is_train[i] == 1 ? "train" : "test";
    if (!headers[i].ok()) {
      const bool missing = headers[i].status().code() == absl::StatusCode::kNotFound;
      bad.add(split, record.file, missing ? "listed in images.txt but missing" : std::string(headers[i].status().message()));
      continue;
    }
    const float w = static_cast<float>(headers[i]->width), h = static_cast<float>(headers[i]->height);
    std::string problem;
    for (size_t p = 0; p < record.parts.size() && problem.empty(); ++p) {
      const Keypoint& k = record.parts[p];
      if (k.visible && (k.x < 0 || k.y < 0 || k.x > w || k.y > h)) {
        problem = fmt::format("part '{}' at ({}, {}) is outside the {}x{} image", part_names[p], k.x, k.y, w, h);
      }
    }
    if (problem.empty() && record.box) {
      const auto& b = *record.box;
      if (b.x < 0 || b.y < 0 || b.x + b.width > w + 1 || b.y + b.height > h + 1) {
        problem = fmt::format("bounding box ({}, {}, {}, {}) is outside the {}x{} image", b.x, b.y, b.width, b.height, w, h);
      }
    }
    if (!problem.empty()) {
      bad.add(split, record.file, problem);
      continue;
    }
    if (crop_to_box) {
      const auto& b = *record.box;
      const cv::Rect rect(static_cast<int>(std::floor(b.x)), static_cast<int>(std::floor(b.y)),
                          static_cast<int>(std::ceil(b.x + b.width)) - static_cast<int>(std::floor(b.x)),
                          static_cast<int>(std::ceil(b.y + b.height)) - static_cast<int>(std::floor(b.y)));
      record.crop = rect & cv::Rect(0, 0, headers[i]->width, headers[i]->height);
    }
    splits[split].push_back(std::move(record));
  }
  PQ_RETURN_IF_ERROR(bad.finish(info.name, options->fail_on_bad, info));
  info.num_classes = num_classes;
  info.class_names = std::move(class_names);
  info.splits = {"train", "test"};
  info.has_parts = has_parts;
  info.has_boxes = has_boxes;
  info.part_names = std::move(part_names);
  const std::string identity =
      fmt::format("cub200|{}|train={}|test={}|crop_to_box={}|parts={}|{}|skipped={}", fs::absolute(root).string(),
                  splits["train"].size(), splits["test"].size(), crop_to_box, has_parts, options->summary,
                  info.skipped.size());
  return std::shared_ptr<Cub200Dataset>(
      new Cub200Dataset(std::move(info), std::move(*options), std::move(splits), identity, std::move(pool)));
}

}  // namespace protoquant::datasets
