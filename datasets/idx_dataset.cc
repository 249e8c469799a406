#include "idx_dataset.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include "idx_file.h"
#include "protoquant/status.h"

namespace protoquant::datasets {
namespace fs = std::filesystem;

namespace {

// "<root>/<stem>.gz" if present, else "<root>/<stem>" (raw).
fs::path locate(const fs::path& root, const std::string& stem) {
  const fs::path gz = root / (stem + ".gz");
  return fs::exists(gz) ? gz : root / stem;
}

}  // namespace

absl::StatusOr<std::shared_ptr<Dataset>> IdxDataset::open(const Params& params) {
  const fs::path root = params.get_string("root");
  if (!fs::is_directory(root)) return absl::NotFoundError(fmt::format("{}: dataset folder not found", root.string()));
  auto dataset = std::shared_ptr<IdxDataset>(new IdxDataset());

  auto load_split = [&](const std::string& prefix, Split& split) -> absl::Status {
    const fs::path images_path = locate(root, params.get_string(prefix + "_images"));
    const fs::path labels_path = locate(root, params.get_string(prefix + "_labels"));
    PQ_ASSIGN_OR_RETURN(torch::Tensor images, read_idx(images_path));
    PQ_ASSIGN_OR_RETURN(torch::Tensor labels, read_idx(labels_path));
    if (images.dim() != 3 && images.dim() != 4) {
      return absl::InvalidArgumentError(fmt::format("{}: expected N x H x W images, got {} dimensions",
                                                    images_path.string(), images.dim()));
    }
    if (labels.dim() != 1) {
      return absl::InvalidArgumentError(fmt::format("{}: expected a 1-D label file", labels_path.string()));
    }
    if (labels.size(0) != images.size(0)) {
      return absl::InvalidArgumentError(fmt::format("{}: {} labels for {} images in {}", labels_path.string(),
                                                    labels.size(0), images.size(0), images_path.string()));
    }
    // N x H x W (grey) or N x H x W x C -> N x C x H x W.
    split.images = images.dim() == 3 ? images.unsqueeze(1) : images.permute({0, 3, 1, 2}).contiguous();
    split.labels = labels.to(torch::kInt64);
    return absl::OkStatus();
  };
  PQ_RETURN_IF_ERROR(load_split("train", dataset->train_));
  PQ_RETURN_IF_ERROR(load_split("test", dataset->test_));
  if (dataset->train_.images.sizes().slice(1) != dataset->test_.images.sizes().slice(1)) {
    return absl::InvalidArgumentError(fmt::format("{}: train images are {} but test images are {}", root.string(),
                                                  fmt::join(dataset->train_.images.sizes().slice(1), "x"),
                                                  fmt::join(dataset->test_.images.sizes().slice(1), "x")));
  }

  DatasetInfo& info = dataset->info_;
  info.name = "idx:" + root.filename().string();
  info.num_classes = std::max(dataset->train_.labels.max().item<int64_t>(), dataset->test_.labels.max().item<int64_t>()) + 1;
  auto names = params.get_string_list("class_names");
  if (!names.empty() && static_cast<int64_t>(names.size()) != info.num_classes) {
    return absl::InvalidArgumentError(fmt::format("{}: class_names lists {} names but the labels have {} classes",
                                                  root.string(), names.size(), info.num_classes));
  }
  for (int64_t c = 0; c < info.num_classes; ++c) {
    info.class_names.push_back(names.empty() ? std::to_string(c) : names[static_cast<size_t>(c)]);
  }
  info.channels = dataset->train_.images.size(1);
  info.height = dataset->train_.images.size(2);
  info.width = dataset->train_.images.size(3);
  info.splits = {"train", "test"};

  if (params.get_bool("normalize")) {
    // Mean and std of the training pixels, so any MNIST-format data is standardised alike.
    const auto pixels = dataset->train_.images.to(torch::kFloat64) / 255.0;
    dataset->mean_ = pixels.mean().item<double>();
    dataset->std_ = std::max(pixels.std().item<double>(), 1e-6);
  } else {
    dataset->mean_ = 0.0;
    dataset->std_ = 1.0;
  }
  info.mean.assign(static_cast<size_t>(info.channels), dataset->mean_);
  info.std.assign(static_cast<size_t>(info.channels), dataset->std_);
  dataset->limit_ = params.get_int("limit");
  dataset->identity_ = fmt::format("idx|{}|{}|{}|limit={}", fs::absolute(root).string(),
                                   dataset->train_.images.size(0), dataset->test_.images.size(0), dataset->limit_);
  return std::shared_ptr<Dataset>(dataset);
}

const IdxDataset::Split* IdxDataset::find(const std::string& split) const {
  if (split == "train") return &train_;
  if (split == "test") return &test_;
  return nullptr;
}

int64_t IdxDataset::size(const std::string& split) const {
  const Split* s = find(split);
  if (s == nullptr) return 0;
  const int64_t n = s->images.size(0);
  return limit_ > 0 ? std::min(n, limit_) : n;
}

absl::StatusOr<Batch> IdxDataset::get_batch(const std::string& split, const torch::Tensor& indices) {
  const Split* s = find(split);
  if (s == nullptr) return absl::InvalidArgumentError(fmt::format("{}: no split '{}'", info_.name, split));
  const auto idx = indices.to(torch::kCPU, torch::kInt64);
  if (idx.numel() > 0 && (idx.min().item<int64_t>() < 0 || idx.max().item<int64_t>() >= size(split))) {
    return absl::OutOfRangeError(fmt::format("{}: index out of range for split '{}'", info_.name, split));
  }
  Batch batch;
  batch.images = (s->images.index_select(0, idx).to(torch::kFloat32) * (1.0 / (255.0 * std_))) - (mean_ / std_);
  batch.labels = s->labels.index_select(0, idx);
  return batch;
}

// Any picture as an IDX sample: grey, resized to the images' size (area averaging), normalised as
// the batches are. Fashion-MNIST is light-on-dark; a photo is not inverted for it.
absl::StatusOr<Batch> IdxDataset::load_image(const fs::path& file) {
  if (!fs::is_regular_file(file)) return absl::NotFoundError(fmt::format("{}: no such image file", file.string()));
  cv::Mat grey = cv::imread(file.string(), cv::IMREAD_GRAYSCALE);
  if (grey.empty()) return absl::DataLossError(fmt::format("{}: not an image OpenCV can decode", file.string()));
  if (grey.rows != info_.height || grey.cols != info_.width) {
    cv::resize(grey, grey, cv::Size(static_cast<int>(info_.width), static_cast<int>(info_.height)), 0, 0, cv::INTER_AREA);
  }
  if (!grey.isContinuous()) grey = grey.clone();
  const auto pixels = torch::from_blob(grey.data, {1, 1, grey.rows, grey.cols}, torch::kUInt8).clone();
  Batch batch;
  batch.images = (pixels.to(torch::kFloat32) * (1.0 / (255.0 * std_))) - (mean_ / std_);
  batch.labels = torch::full({1}, -1, torch::kInt64);
  return batch;
}

}  // namespace protoquant::datasets
