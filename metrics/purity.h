// purity (PIP-Net, Nauta et al. CVPR 2023; METHOD.md): for every prototype some class weighs
// above weight_threshold, its top_k training images by the (unclamped) maximum of its similarity
// map; at each, the patch around the peak cell (localisation.h, purity_patch) is tested against
// the visible part keypoints. Per part: the mean of hits over those top images where the part is
// visible (PIP-Net's denominator; denominator = "top_k" divides by the top images instead); a
// prototype's purity is its best part. Left parts
// are merged into right ones by OR (merge_left_right; part names "left X" / "right X").
// Reported: mean, std and the count above 0.5, and the chance level (the same top images, each
// peaking at a random cell) and oracle level (each peaking at the cell that holds the part's
// keypoint) of the same patches. The state is a running top-k per prototype.
//
// PIP-Net's own test loop decrements every class weight by 1e-3 in place before each batch: a
// bug, not reproduced (the class weights are read once, unchanged).
#pragma once

#include "protoquant/localisation.h"
#include "protoquant/metric.h"

namespace protoquant::metrics {

class Purity : public Metric {
 public:
  Purity(LocalisationSettings localisation, int64_t top_k, double weight_threshold, bool merge_left_right,
         std::string denominator, uint64_t chance_seed = 0)
      : localisation_(localisation), top_k_(top_k), weight_threshold_(weight_threshold), merge_(merge_left_right),
        denominator_(std::move(denominator)), chance_seed_(chance_seed) {}
  static ParamSchema schema();

  MetricNeeds needs() const override {
    MetricNeeds n;
    n.similarity = n.parts = true;
    n.eval_split = false;
    n.train_split = true;
    return n;
  }
  absl::Status begin(const EvalContext& context) override;
  absl::Status update(const EvalBatch& batch) override;
  absl::Status merge(const Metric& other) override;
  std::vector<torch::Tensor> partial_state() const override;
  absl::Status load_partial_state(const std::vector<torch::Tensor>& state) override;
  absl::StatusOr<nlohmann::json> compute() override;

 private:
  // Candidates: values P x n, images P x n, hits and visible P x n x G, locations P x n x 2
  // (peak cell row, column), keypoints P x n x K x 3.
  struct Top {
    torch::Tensor values, images, hits, visible, locations, keypoints;
  };
  void keep_top(const Top& candidates);
  // Per prototype, its best part's share of hits when the top images' peaks sit at `cells`
  // (P x k x K int64: the cell of each (prototype, image) pair for each part).
  torch::Tensor best_part(const torch::Tensor& hits) const;
  // Hits P x k x G of the patches at `cells` (P x k x K' cells; K' = 1: one cell for every part).
  torch::Tensor patch_hits(const torch::Tensor& cells) const;

  LocalisationSettings localisation_;
  int64_t top_k_;
  double weight_threshold_;
  bool merge_;
  std::string denominator_;
  uint64_t chance_seed_;
  int64_t height_ = 0, width_ = 0;
  int64_t grid_h_ = 0, grid_w_ = 0;  // the similarity maps' (0 until a batch came)
  torch::Tensor part_group_;  // K int64: the merged part each keypoint counts for
  int64_t groups_ = 0;
  torch::Tensor selected_;    // P bool: prototypes with a class weight above the threshold
  // The running top-k per prototype: P x k values (-inf when empty) and image indices, and the
  // merged parts' hits and visibility at those images, P x k x G.
  Top top_;
};

}  // namespace protoquant::metrics
