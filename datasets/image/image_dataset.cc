#include "image_dataset.h"

#include <algorithm>
#include <cstdio>
#include <functional>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "protoquant/status.h"

namespace protoquant::datasets {

namespace {

// Files named in a warning or error before "... and N more".
constexpr size_t kListedBadFiles = 5;
// Batch image tensors kept for reuse. Above glibc's 32 MiB mmap threshold every fresh batch
// (B x 3 x 224 x 224 float is 77 MB at B = 128) would be mapped and faulted in page by page.
constexpr size_t kMaxBuffers = 4;
// Announced batches kept in flight.
constexpr size_t kMaxPending = 2;

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

}  // namespace

ParamSchema image_param_schema(const std::vector<std::string>& train_transform,
                               const std::vector<std::string>& eval_transform) {
  return ParamSchema{
      ParamSpec::StringList("train_transform", train_transform,
                            "transforms of the train split, in order: resize:S|HxW, center_crop:S|HxW, "
                            "random_resized_crop:S[:min_scale], hflip[:p], trivial_augment, random_erasing[:p]"),
      ParamSpec::StringList("eval_transform", eval_transform,
                            "transforms of every other split and of feature extraction (same forms)"),
      ParamSpec::FloatList("mean", {0.485, 0.456, 0.406}, "per-channel RGB mean in [0, 1] (ImageNet)"),
      ParamSpec::FloatList("std", {0.229, 0.224, 0.225}, "per-channel RGB std in [0, 1] (ImageNet)").min(1e-6),
      ParamSpec::Int("threads", 0, "decoding threads (0 = one per hardware thread)").min(0),
      ParamSpec::String("on_bad_sample", "skip",
                        "a corrupt, truncated, missing or mis-annotated sample: skip it (with a warning) or fail")
          .one_of({"skip", "fail"})};
}

absl::StatusOr<ImageOptions> ImageOptions::from(const Params& params, const BuildContext& context,
                                                cv::Size source_size) {
  ImageOptions options;
  std::vector<std::string> errors;
  auto train = Pipeline::parse(params.get_string_list("train_transform"), "train_transform", source_size);
  auto eval = Pipeline::parse(params.get_string_list("eval_transform"), "eval_transform", source_size);
  if (!train.ok()) errors.emplace_back(train.status().message());
  if (!eval.ok()) errors.emplace_back(eval.status().message());
  const auto mean = params.get_float_list("mean");
  const auto std = params.get_float_list("std");
  if (mean.size() != 3) errors.push_back(fmt::format("mean: expected 3 values (RGB), got {}", mean.size()));
  if (std.size() != 3) errors.push_back(fmt::format("std: expected 3 values (RGB), got {}", std.size()));
  if (errors.empty() && (train->height() != eval->height() || train->width() != eval->width())) {
    errors.push_back(fmt::format("train_transform gives {}x{} images but eval_transform {}x{}; the backbone needs one size",
                                 train->height(), train->width(), eval->height(), eval->width()));
  }
  if (!errors.empty()) return absl::InvalidArgumentError(fmt::format("{}", fmt::join(errors, "\n")));
  for (int c = 0; c < 3; ++c) {
    options.mean[c] = mean[static_cast<size_t>(c)];
    options.std[c] = std[static_cast<size_t>(c)];
  }
  options.train = std::move(*train);
  options.eval = std::move(*eval);
  options.train.set_mean(options.mean);
  options.eval.set_mean(options.mean);
  options.threads = static_cast<int>(params.get_int("threads"));
  options.fail_on_bad = params.get_string("on_bad_sample") == "fail";
  options.seed = context.seed;
  options.summary = fmt::format("train=[{}] eval=[{}] mean={} std={}", fmt::join(params.get_string_list("train_transform"), ","),
                                fmt::join(params.get_string_list("eval_transform"), ","), fmt::join(mean, ","),
                                fmt::join(std, ","));
  return options;
}

void BadSamples::add(const std::string& split, const std::string& file, const std::string& reason) {
  skipped_.push_back({split, file, reason});
}

absl::Status BadSamples::finish(const std::string& dataset, bool fail_on_bad, DatasetInfo& info) const {
  info.skipped = skipped_;
  if (skipped_.empty()) return absl::OkStatus();
  std::vector<std::string> lines;
  for (size_t i = 0; i < std::min(skipped_.size(), kListedBadFiles); ++i) {
    lines.push_back(fmt::format("{}: {}", skipped_[i].file, skipped_[i].reason));
  }
  if (skipped_.size() > kListedBadFiles) lines.push_back(fmt::format("... and {} more", skipped_.size() - kListedBadFiles));
  if (fail_on_bad) {
    return absl::InvalidArgumentError(fmt::format("{}: {} bad samples (on_bad_sample = \"fail\"):\n{}", dataset,
                                                  skipped_.size(), fmt::join(lines, "\n")));
  }
  fmt::print(stderr, "warning: {}: skipped {} bad samples (on_bad_sample = \"skip\"; `protoquant data` lists all):\n",
             dataset, skipped_.size());
  for (const auto& line : lines) fmt::print(stderr, "warning:   {}\n", line);
  return absl::OkStatus();
}

std::vector<absl::StatusOr<ImageHeader>> probe_records(const std::vector<ImageRecord>& records, WorkerPool& pool) {
  std::vector<absl::StatusOr<ImageHeader>> headers(records.size(), absl::UnknownError("not probed"));
  pool.submit(static_cast<int64_t>(records.size()), [&](int64_t i) {
        const auto k = static_cast<size_t>(i);
        auto header = probe_file(records[k].file);
        // probe_file's message starts with the file name; the caller lists file and reason apart.
        std::string reason(header.status().message());
        if (!header.ok() && reason.rfind(records[k].file + ": ", 0) == 0) {
          header = absl::Status(header.status().code(), reason.substr(records[k].file.size() + 2));
        }
        headers[k] = std::move(header);
      })->wait();
  return headers;
}

ImageDataset::ImageDataset(DatasetInfo info, ImageOptions options, std::map<std::string, std::vector<ImageRecord>> splits,
                           std::string identity, std::shared_ptr<WorkerPool> pool)
    : info_(std::move(info)),
      options_(std::move(options)),
      splits_(std::move(splits)),
      identity_(std::move(identity)),
      pool_(std::move(pool)) {
  info_.channels = 3;
  info_.mean.assign(options_.mean, options_.mean + 3);
  info_.std.assign(options_.std, options_.std + 3);
  info_.height = options_.eval.height();
  info_.width = options_.eval.width();
  for (const auto& [name, records] : splits_) draws_[name].assign(records.size(), 0);
}

ImageDataset::~ImageDataset() {
  // Workers of an unclaimed prefetch write into pending_, which dies before pool_ joins them.
  for (auto& pending : pending_) pending->job->wait();
}

absl::Status ImageDataset::generate(const std::string&, int64_t, Sample&) const {
  return absl::InternalError("this dataset has no generated samples");
}

absl::Status ImageDataset::generate_intervention(const std::string&, int64_t, const Intervention&, Sample&) const {
  return absl::InternalError("this dataset cannot re-render its samples");
}

absl::StatusOr<Batch> ImageDataset::get_intervened_batch(const std::string& split, const torch::Tensor& indices,
                                                         const std::vector<Intervention>& interventions) {
  if (!info_.has_interventions) return Dataset::get_intervened_batch(split, indices, interventions);
  const int64_t n = indices.numel();
  if (interventions.size() != 1 && static_cast<int64_t>(interventions.size()) != n) {
    return absl::InvalidArgumentError(
        fmt::format("{}: {} interventions for {} samples (one, or one each)", info_.name, interventions.size(), n));
  }
  PQ_ASSIGN_OR_RETURN(auto pending, start(split, indices, /*augment=*/false, /*urgent=*/true, interventions));
  PQ_ASSIGN_OR_RETURN(Batch batch, finish(*pending));
  // The protocols pair each re-render with its original: a sample left out would misalign them.
  if (batch.labels.size(0) != n) {
    return absl::DataLossError(fmt::format("{}: {} of {} samples of split '{}' could not be re-rendered", info_.name,
                                           n - batch.labels.size(0), n, split));
  }
  return batch;
}

int64_t ImageDataset::size(const std::string& split) const {
  const auto it = splits_.find(split);
  return it == splits_.end() ? 0 : static_cast<int64_t>(it->second.size());
}

absl::StatusOr<Batch> ImageDataset::get_batch(const std::string& split, const torch::Tensor& indices) {
  return serve(split, indices, split == "train");
}

absl::StatusOr<Batch> ImageDataset::get_eval_batch(const std::string& split, const torch::Tensor& indices) {
  return serve(split, indices, false);
}

void ImageDataset::prefetch(const std::string& split, const torch::Tensor& indices, bool augment) {
  auto started = start(split, indices, augment && split == "train", /*urgent=*/false);
  // A bad request is reported by the get_batch that follows, not here.
  if (!started.ok()) return;
  pending_.push_back(std::move(*started));
  // The loops announce one batch ahead; older unclaimed prefetches are dropped.
  while (pending_.size() > kMaxPending) {
    pending_.front()->job->wait();
    pending_.pop_front();
  }
}

absl::StatusOr<Batch> ImageDataset::serve(const std::string& split, const torch::Tensor& indices, bool augment) {
  const auto idx = indices.to(torch::kCPU, torch::kInt64).contiguous();
  for (auto it = pending_.begin(); it != pending_.end(); ++it) {
    const Pending& p = **it;
    if (p.split == split && p.augment == augment && static_cast<int64_t>(p.indices.size()) == idx.numel() &&
        std::equal(p.indices.begin(), p.indices.end(), idx.data_ptr<int64_t>())) {
      auto pending = std::move(*it);
      pending_.erase(it);
      return finish(*pending);
    }
  }
  // Not announced: decoded now, ahead of any prefetch still queued (the caller waits for it).
  PQ_ASSIGN_OR_RETURN(auto pending, start(split, idx, augment, /*urgent=*/true));
  return finish(*pending);
}

torch::Tensor ImageDataset::image_buffer(int64_t batch) {
  const std::vector<int64_t> shape{batch, 3, info_.height, info_.width};
  for (auto& buffer : buffers_) {
    // Held only here: the caller has dropped the batch (and every view of it).
    if (buffer.sizes() == c10::IntArrayRef(shape) && buffer.use_count() == 1 && buffer.storage().use_count() == 1) {
      return buffer;
    }
  }
  auto buffer = torch::empty(shape, torch::kFloat32);
  if (buffers_.size() < kMaxBuffers) buffers_.push_back(buffer);
  return buffer;
}

absl::StatusOr<std::unique_ptr<ImageDataset::Pending>> ImageDataset::start(const std::string& split,
                                                                           const torch::Tensor& indices, bool augment,
                                                                           bool urgent,
                                                                           std::vector<Intervention> interventions) {
  const auto it = splits_.find(split);
  if (it == splits_.end()) {
    return absl::InvalidArgumentError(fmt::format("{}: no split '{}' (it has: {})", info_.name, split,
                                                  fmt::join(info_.splits, ", ")));
  }
  const auto idx = indices.to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t n = idx.numel(), total = static_cast<int64_t>(it->second.size());
  auto pending = std::make_unique<Pending>();
  pending->split = split;
  pending->augment = augment;
  pending->indices.assign(idx.data_ptr<int64_t>(), idx.data_ptr<int64_t>() + n);
  pending->interventions = std::move(interventions);
  for (int64_t i : pending->indices) {
    if (i < 0 || i >= total) {
      return absl::OutOfRangeError(fmt::format("{}: index {} out of range for split '{}' ({} samples)", info_.name, i,
                                               split, total));
    }
  }
  const int64_t parts = static_cast<int64_t>(info_.part_names.size());
  Batch& batch = pending->batch;
  batch.images = image_buffer(n);
  batch.labels = torch::empty({n}, torch::kInt64);
  if (info_.has_parts) batch.parts = torch::zeros({n, parts, 3}, torch::kFloat32);
  if (info_.has_boxes) batch.boxes = torch::zeros({n, 4}, torch::kFloat32);
  if (!pending->interventions.empty()) batch.part_maps = torch::zeros({n, info_.height, info_.width}, torch::kInt64);
  pending->status.assign(static_cast<size_t>(n), absl::OkStatus());
  // Seeds are drawn here, in request order, so they do not depend on which worker runs what.
  std::vector<uint64_t> seeds(static_cast<size_t>(n));
  auto& draws = draws_[split];
  int64_t* labels = batch.labels.data_ptr<int64_t>();
  const uint64_t split_hash = std::hash<std::string>{}(split);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t i = pending->indices[static_cast<size_t>(k)];
    const uint64_t draw = augment ? draws[static_cast<size_t>(i)]++ : 0;
    seeds[static_cast<size_t>(k)] =
        splitmix64(splitmix64(splitmix64(options_.seed ^ split_hash) + static_cast<uint64_t>(i)) + draw);
    labels[k] = it->second[static_cast<size_t>(i)].label;
  }
  Pending* raw = pending.get();
  float* images = batch.images.data_ptr<float>();
  float* part_data = batch.parts.defined() ? batch.parts.data_ptr<float>() : nullptr;
  float* box_data = batch.boxes.defined() ? batch.boxes.data_ptr<float>() : nullptr;
  int64_t* map_data = batch.part_maps.defined() ? batch.part_maps.data_ptr<int64_t>() : nullptr;
  const int64_t image_floats = 3 * info_.height * info_.width, map_cells = info_.height * info_.width;
  pending->job = pool_->submit(n, [this, raw, seeds = std::move(seeds), images, part_data, box_data, map_data,
                                   image_floats, map_cells, parts](int64_t k) {
    const auto& what = raw->interventions;
    const Intervention* intervention =
        what.empty() ? nullptr : &what[what.size() == 1 ? 0 : static_cast<size_t>(k)];
    raw->status[static_cast<size_t>(k)] =
        prepare(raw->split, raw->indices[static_cast<size_t>(k)], raw->augment, seeds[static_cast<size_t>(k)],
                images + k * image_floats, part_data ? part_data + k * parts * 3 : nullptr,
                box_data ? box_data + k * 4 : nullptr, intervention, map_data ? map_data + k * map_cells : nullptr);
  }, urgent);
  return pending;
}

absl::Status ImageDataset::prepare(const std::string& split, int64_t index, bool augment, uint64_t seed, float* image,
                                   float* parts, float* box, const Intervention* intervention,
                                   int64_t* part_map) const {
  return guard("prepare sample", [&]() -> absl::Status {
    const ImageRecord& record = splits_.at(split)[static_cast<size_t>(index)];
    const Pipeline& pipeline = augment ? options_.train : options_.eval;
    Rng rng(seed);
    Sample sample;
    sample.parts = record.parts;
    sample.box = record.box;
    if (intervention != nullptr && !record.file.empty()) {
      return absl::InternalError(fmt::format("{}: a file cannot be re-rendered", record.file));
    }
    if (record.file.empty()) {
      PQ_RETURN_IF_ERROR(intervention != nullptr ? generate_intervention(split, index, *intervention, sample)
                                                 : generate(split, index, sample));
      cv::Mat generated = sample.image;
      PQ_RETURN_IF_ERROR(pipeline.run(
          generated.size(), 1, [&](int) -> absl::StatusOr<cv::Mat> { return generated; }, record.crop, sample, rng));
    } else {
      auto bytes = read_bytes(record.file);
      if (!bytes.ok()) return bytes.status();
      auto header = probe_image(bytes->data(), bytes->size());
      if (!header.ok()) return absl::DataLossError(fmt::format("{}: {}", record.file, std::string(header.status().message())));
      const int max_reduction = header->format == ImageFormat::kJpeg ? 8 : 1;
      auto status = pipeline.run(
          cv::Size(header->width, header->height), max_reduction,
          [&](int reduction) { return decode_bgr(*bytes, header->format, reduction); }, record.crop, sample, rng);
      if (!status.ok()) return absl::DataLossError(fmt::format("{}: {}", record.file, std::string(status.message())));
    }
    to_normalized_chw(sample.image, options_.mean, options_.std, image);
    if (part_map != nullptr) {
      if (sample.part_map.size() != sample.image.size()) {
        return absl::InternalError("the re-rendered sample's part map lost the image's size");
      }
      for (int y = 0; y < sample.part_map.rows; ++y) {
        const int32_t* row = sample.part_map.ptr<int32_t>(y);
        std::copy(row, row + sample.part_map.cols, part_map + static_cast<ptrdiff_t>(y) * sample.part_map.cols);
      }
    }
    if (parts != nullptr) {
      for (size_t p = 0; p < sample.parts.size(); ++p) {
        parts[3 * p] = sample.parts[p].x;
        parts[3 * p + 1] = sample.parts[p].y;
        parts[3 * p + 2] = sample.parts[p].visible ? 1.0f : 0.0f;
      }
    }
    if (box != nullptr && sample.box) {
      box[0] = sample.box->x;
      box[1] = sample.box->y;
      box[2] = sample.box->x + sample.box->width;
      box[3] = sample.box->y + sample.box->height;
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<Batch> ImageDataset::load_image(const std::filesystem::path& file) {
  return guard(file.string(), [&]() -> absl::StatusOr<Batch> {
    PQ_ASSIGN_OR_RETURN(const std::vector<uint8_t> bytes, read_bytes(file));
    auto header = probe_image(bytes.data(), bytes.size());
    if (!header.ok()) return absl::DataLossError(fmt::format("{}: {}", file.string(), std::string(header.status().message())));
    Sample sample;
    Rng rng(0);  // the eval transform draws nothing; a seed all the same
    const int max_reduction = header->format == ImageFormat::kJpeg ? 8 : 1;
    auto status = options_.eval.run(
        cv::Size(header->width, header->height), max_reduction,
        [&](int reduction) { return decode_bgr(bytes, header->format, reduction); }, std::nullopt, sample, rng);
    if (!status.ok()) return absl::DataLossError(fmt::format("{}: {}", file.string(), std::string(status.message())));
    Batch batch;
    batch.images = torch::empty({1, 3, info_.height, info_.width}, torch::kFloat32);
    to_normalized_chw(sample.image, options_.mean, options_.std, batch.images.data_ptr<float>());
    batch.labels = torch::full({1}, -1, torch::kInt64);
    return batch;
  });
}

absl::StatusOr<Batch> ImageDataset::finish(Pending& pending) {
  pending.job->wait();
  std::vector<int64_t> good;
  for (size_t k = 0; k < pending.status.size(); ++k) {
    const auto& status = pending.status[k];
    if (status.ok()) {
      good.push_back(static_cast<int64_t>(k));
      continue;
    }
    if (options_.fail_on_bad) {
      return absl::DataLossError(fmt::format("{} (on_bad_sample = \"fail\")", std::string(status.message())));
    }
    std::lock_guard<std::mutex> lock(warned_mutex_);
    if (warned_.insert(std::string(status.message())).second) {
      fmt::print(stderr, "warning: {}; left out of its batch (on_bad_sample = \"skip\")\n", std::string(status.message()));
    }
  }
  Batch batch = std::move(pending.batch);
  if (good.size() != pending.status.size()) {
    // A file that passed the header check but fails to decode: the batch shrinks, loudly.
    const auto keep = torch::tensor(good, torch::kInt64);
    batch.images = batch.images.index_select(0, keep);
    batch.labels = batch.labels.index_select(0, keep);
    if (batch.parts.defined()) batch.parts = batch.parts.index_select(0, keep);
    if (batch.boxes.defined()) batch.boxes = batch.boxes.index_select(0, keep);
    if (batch.part_maps.defined()) batch.part_maps = batch.part_maps.index_select(0, keep);
  }
  return batch;
}

}  // namespace protoquant::datasets
