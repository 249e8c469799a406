// idx: an MNIST-format folder (MNIST, Fashion-MNIST, KMNIST...) with train and test splits,
// held in memory as uint8 and normalised per batch. The class count is read from the labels.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <absl/status/statusor.h>

#include "protoquant/dataset.h"
#include "protoquant/params.h"

namespace protoquant::datasets {

class IdxDataset : public Dataset {
 public:
  static absl::StatusOr<std::shared_ptr<Dataset>> open(const Params& params);

  const DatasetInfo& info() const override { return info_; }
  int64_t size(const std::string& split) const override;
  absl::StatusOr<Batch> get_batch(const std::string& split, const torch::Tensor& indices) override;
  absl::StatusOr<Batch> load_image(const std::filesystem::path& file) override;
  std::string identity() const override { return identity_; }

 private:
  struct Split {
    torch::Tensor images;  // N x 1 x H x W uint8
    torch::Tensor labels;  // N int64
  };
  const Split* find(const std::string& split) const;

  DatasetInfo info_;
  Split train_, test_;
  double mean_ = 0.0, std_ = 1.0;
  int64_t limit_ = 0;
  std::string identity_;
};

}  // namespace protoquant::datasets
