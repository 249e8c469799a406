// Finite Scalar Quantization (Mentzer et al., "Finite Scalar Quantization: VQ-VAE Made Simple",
// ICLR 2024) as a ProtoQuant quantizer, built out of tree against the installed SDK.
//
// Each feature vector x (D channels) is projected to d = len(levels) numbers, each bounded by
// tanh and rounded to one of L_i levels (straight-through gradients); the rounded point is
// projected back to D channels. The codebook is implicit: the grid of prod(L_i) points, mapped
// back, so the prototypes are codewords a head can start from like VQ's. No codebook loss:
// `reconstruction_weight` keeps the quantized map near the backbone's (its frozen head g reads
// it). Odd level counts only (the paper's even-L offset is left out), so 0 is always a level.
#include <numeric>

#include <fmt/format.h>
#include <torch/torch.h>

#include "protoquant/plugin.h"

namespace fsq {

using protoquant::Quantized;

class FiniteScalarQuantizer : public protoquant::Quantizer {
 public:
  FiniteScalarQuantizer(int64_t dim, std::vector<int64_t> levels, double reconstruction_weight)
      : levels_(std::move(levels)), weight_(reconstruction_weight) {
    const int64_t d = static_cast<int64_t>(levels_.size());
    down_ = register_module("down", torch::nn::Linear(torch::nn::LinearOptions(dim, d)));
    up_ = register_module("up", torch::nn::Linear(torch::nn::LinearOptions(d, dim)));
    half_ = torch::tensor(std::vector<double>(levels_.begin(), levels_.end()), torch::kFloat32).sub(1).div(2);
    // Mixed-radix place values: index = sum_i level_i * prod_{j < i} L_j.
    std::vector<int64_t> radix(levels_.size(), 1);
    for (size_t i = 1; i < levels_.size(); ++i) radix[i] = radix[i - 1] * levels_[i - 1];
    radix_ = torch::tensor(radix, torch::kInt64);
    codes_ = std::accumulate(levels_.begin(), levels_.end(), int64_t{1}, std::multiplies<>());
    usage_ = protoquant::CodebookUsage(1, codes_);
  }

  Quantized quantize(const torch::Tensor& features) override {
    TORCH_CHECK(features.dim() == 4 && features.size(1) == up_->options.out_features(),
                "fsq: expected B x ", up_->options.out_features(), " x H x W features, got ", features.sizes());
    const torch::Tensor x = features.permute({0, 2, 3, 1});  // B x H x W x D
    const torch::Tensor rounded = round_ste(bounded(down_->forward(x)));  // integer levels in [-half, half]
    const torch::Tensor indices = to_index(rounded.detach());
    usage_.record(indices.cpu());
    const torch::Tensor back = up_->forward(rounded / half_.to(rounded.device())).permute({0, 3, 1, 2});
    const torch::Tensor loss = weight_ * torch::mse_loss(back, features.detach());
    return {back.contiguous(), indices, loss};
  }

  torch::Tensor encode(const torch::Tensor& vectors) const override {
    torch::NoGradGuard no_grad;
    return to_index(torch::round(bounded(torch::linear(vectors, down_->weight, down_->bias)))).unsqueeze(1);
  }

  // Every grid point, in index order, projected back to D channels.
  torch::Tensor codebook() const override {
    const torch::Tensor index = torch::arange(codes_, torch::kInt64);
    const torch::Tensor digits = (index.unsqueeze(1).div(radix_, "floor")).remainder(torch::tensor(levels_));
    const torch::Tensor points = (digits.to(torch::kFloat32) - half_) / half_;
    return torch::linear(points.to(up_->weight.device()), up_->weight, up_->bias);
  }

  int64_t num_codes() const override { return codes_; }

 private:
  torch::Tensor bounded(const torch::Tensor& z) const { return torch::tanh(z) * half_.to(z.device()); }
  static torch::Tensor round_ste(const torch::Tensor& z) { return z + (torch::round(z) - z).detach(); }
  torch::Tensor to_index(const torch::Tensor& rounded) const {
    const torch::Tensor digits = (rounded + half_.to(rounded.device())).round().to(torch::kInt64);
    return (digits * radix_.to(rounded.device())).sum(-1);
  }

  std::vector<int64_t> levels_;
  double weight_;
  int64_t codes_ = 1;
  torch::nn::Linear down_{nullptr}, up_{nullptr};
  torch::Tensor half_, radix_;
};

absl::Status register_fsq(protoquant::Registry& registry) {
  return registry.quantizers.add(
      {"fsq", "finite scalar quantization (Mentzer et al., 2023): bounded, rounded projections; an implicit grid codebook",
       protoquant::ParamSchema{
           protoquant::ParamSpec::IntList("levels", {5, 5, 5}, "levels per projected dimension (odd); K = their product")
               .range(3, 255),
           protoquant::ParamSpec::Float("reconstruction_weight", 1.0, "weight of MSE(quantized, features)").range(0.0, 1e6)},
       [](const protoquant::Params& p, const protoquant::BuildContext& c)
           -> absl::StatusOr<std::shared_ptr<protoquant::Quantizer>> {
         if (c.feature_channels < 1) return absl::InvalidArgumentError("fsq needs the backbone's channel count");
         const auto levels = p.get_int_list("levels");
         if (levels.empty()) return absl::InvalidArgumentError("fsq: levels must not be empty");
         for (int64_t l : levels) {
           if (l % 2 == 0) return absl::InvalidArgumentError(fmt::format("fsq: level count {} is even; use odd counts", l));
         }
         return std::make_shared<FiniteScalarQuantizer>(c.feature_channels, levels, p.get_float("reconstruction_weight"));
       }});
}

}  // namespace fsq

PROTOQUANT_PLUGIN(fsq::register_fsq)
