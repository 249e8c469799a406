// What every image dataset (image_folder, cub200, synthparts) shares: a list of records per
// split, train and eval transform pipelines, normalisation, the bad-sample policy, and batches
// prepared by worker threads with prefetch. Augmentation is seeded per sample from (seed, split,
// index, how many times that sample was drawn before), so batches are identical for any thread
// count and any batch size.
#pragma once

#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <absl/status/statusor.h>

#include "decode.h"
#include "loader.h"
#include "protoquant/build_context.h"
#include "protoquant/dataset.h"
#include "protoquant/params.h"
#include "transforms.h"

namespace protoquant::datasets {

struct ImageRecord {
  std::string file;  // empty for generated samples
  int64_t label = 0;
  std::vector<Keypoint> parts;    // in full-image pixels
  std::optional<cv::Rect2f> box;  // in full-image pixels (edge coordinates)
  std::optional<cv::Rect> crop;   // cut out before the transforms (cub200 crop_to_box)
};

// The parameters every image dataset accepts, to extend its own schema with.
ParamSchema image_param_schema(const std::vector<std::string>& train_transform,
                               const std::vector<std::string>& eval_transform);

struct ImageOptions {
  Pipeline train, eval;
  double mean[3] = {0.485, 0.456, 0.406};
  double std[3] = {0.229, 0.224, 0.225};
  int threads = 0;
  bool fail_on_bad = false;
  uint64_t seed = 0;
  std::string summary;  // transforms and normalisation, for identity()

  // source_size: the one size of every source image, when there is one (generated data).
  static absl::StatusOr<ImageOptions> from(const Params& params, const BuildContext& context,
                                           cv::Size source_size = {});
};

// Collects bad samples while a dataset opens, then applies the policy: "fail" returns one error
// naming the first files, "skip" prints a warning naming the first files and keeps the full list
// for DatasetInfo::skipped (which `protoquant data` prints).
class BadSamples {
 public:
  void add(const std::string& split, const std::string& file, const std::string& reason);
  size_t count() const { return skipped_.size(); }
  absl::Status finish(const std::string& dataset, bool fail_on_bad, DatasetInfo& info) const;

 private:
  std::vector<DatasetInfo::Skipped> skipped_;
};

// Probes every record's file on the pool (header and end marker, no decoding). Returns the
// header of each file, or why it is bad (the reason alone, without the file name).
std::vector<absl::StatusOr<ImageHeader>> probe_records(const std::vector<ImageRecord>& records, WorkerPool& pool);

class ImageDataset : public Dataset {
 public:
  ~ImageDataset() override;
  const DatasetInfo& info() const override { return info_; }
  int64_t size(const std::string& split) const override;
  absl::StatusOr<Batch> get_batch(const std::string& split, const torch::Tensor& indices) override;
  absl::StatusOr<Batch> get_eval_batch(const std::string& split, const torch::Tensor& indices) override;
  void prefetch(const std::string& split, const torch::Tensor& indices, bool augment) override;
  absl::StatusOr<Batch> load_image(const std::filesystem::path& file) override;
  // Re-renders through generate_intervention and the eval transform, which moves the part map
  // with the pixels.
  absl::StatusOr<Batch> get_intervened_batch(const std::string& split, const torch::Tensor& indices,
                                             const std::vector<Intervention>& interventions) override;
  std::string identity() const override { return identity_; }

  int threads() const { return pool_->threads(); }

 protected:
  // `info` must already name the classes, parts and splits; size and channels are filled in.
  ImageDataset(DatasetInfo info, ImageOptions options, std::map<std::string, std::vector<ImageRecord>> splits,
               std::string identity, std::shared_ptr<WorkerPool> pool);
  // Generated datasets override this to draw the sample (image and annotations in full size).
  virtual absl::Status generate(const std::string& split, int64_t index, Sample& sample) const;
  // Datasets with info().has_interventions draw the sample without the intervention's parts and
  // object, with its part map (Batch::part_maps' codes), in full size.
  virtual absl::Status generate_intervention(const std::string& split, int64_t index, const Intervention& intervention,
                                             Sample& sample) const;

 private:
  struct Pending {
    std::string split;
    bool augment = false;
    std::vector<int64_t> indices;
    // Re-renders (get_intervened_batch): one per sample, or one for all; empty for plain samples.
    std::vector<Intervention> interventions;
    Batch batch;
    std::vector<absl::Status> status;  // per sample
    std::shared_ptr<WorkerPool::Job> job;
  };
  absl::StatusOr<Batch> serve(const std::string& split, const torch::Tensor& indices, bool augment);
  // urgent: the caller waits for it, so its samples go ahead of queued prefetches.
  absl::StatusOr<std::unique_ptr<Pending>> start(const std::string& split, const torch::Tensor& indices, bool augment,
                                                 bool urgent, std::vector<Intervention> interventions = {});
  absl::StatusOr<Batch> finish(Pending& pending);
  // One sample into the batch's buffers; re-rendered without `intervention`'s parts and object,
  // with its part map, when one is given (generated samples only).
  absl::Status prepare(const std::string& split, int64_t index, bool augment, uint64_t seed, float* image,
                       float* parts, float* box, const Intervention* intervention = nullptr,
                       int64_t* part_map = nullptr) const;
  torch::Tensor image_buffer(int64_t batch);

  DatasetInfo info_;
  ImageOptions options_;
  std::map<std::string, std::vector<ImageRecord>> splits_;
  std::map<std::string, std::vector<uint32_t>> draws_;  // per split and sample: times augmented
  std::string identity_;
  std::shared_ptr<WorkerPool> pool_;
  std::deque<std::unique_ptr<Pending>> pending_;  // announced by prefetch, oldest first
  std::vector<torch::Tensor> buffers_;  // batch image tensors, reused once the caller drops them
  std::mutex warned_mutex_;
  std::set<std::string> warned_;
};

}  // namespace protoquant::datasets
