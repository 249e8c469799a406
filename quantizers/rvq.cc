#include "rvq.h"

#include "codebook_init.h"
#include "kept_codes.h"

namespace protoquant::quantizers {

namespace F = torch::nn::functional;

ResidualQuantizer::ResidualQuantizer(const RvqOptions& options)
    : options_(options), metric_(parse_metric(options.metric)) {
  std::vector<torch::Tensor> books;
  for (int64_t l = 0; l < options.levels; ++l) {
    // Residual levels start small: they refine, they do not replace.
    books.push_back(initial_codebook(options.init, options.codes, options.dim) * (l == 0 ? 1.0 : 0.1));
  }
  codebooks_ = register_parameter("codebooks", torch::stack(books));
  usage_ = CodebookUsage(options.levels, options.codes);
}

absl::Status ResidualQuantizer::initialize(const torch::Tensor& sample) {
  if (options_.init != "kmeans") return absl::OkStatus();
  torch::NoGradGuard no_grad;
  auto residual = sample.to(codebooks_.device()).to(torch::kFloat32);
  for (int64_t l = 0; l < options_.levels; ++l) {
    const Metric metric = l == 0 ? metric_ : Metric::kEuclidean;
    codebooks_[l].copy_(kmeans_codebook(residual, options_.codes, options_.kmeans_iterations, metric == Metric::kCosine));
    residual = residual - codebooks_[l].index_select(0, nearest_code(residual, codebooks_[l], metric));
  }
  return absl::OkStatus();
}

torch::Tensor ResidualQuantizer::encode(const torch::Tensor& vectors) const {
  torch::NoGradGuard no_grad;
  auto residual = vectors.detach();
  std::vector<torch::Tensor> levels;
  for (int64_t l = 0; l < options_.levels; ++l) {
    const auto indices = nearest_code(residual, codebooks_[l], l == 0 ? metric_ : Metric::kEuclidean, options_.search);
    residual = residual - codebooks_[l].index_select(0, indices);
    levels.push_back(indices);
  }
  return torch::stack(levels, 1);
}

Quantized ResidualQuantizer::quantize(const torch::Tensor& features) {
  const auto flat = feature_rows(features, options_.dim, "rvq").detach();
  const int64_t b = features.size(0), d = features.size(1), h = features.size(2), w = features.size(3);
  auto residual = flat;
  torch::Tensor reconstruction = torch::zeros_like(flat);
  torch::Tensor loss = torch::zeros({}, flat.options());
  std::vector<torch::Tensor> levels;
  for (int64_t l = 0; l < options_.levels; ++l) {
    const Metric metric = l == 0 ? metric_ : Metric::kEuclidean;
    const auto indices = nearest_code(residual, codebooks_[l], metric, options_.search);
    const auto chosen = codebooks_[l].index_select(0, indices);
    loss = loss + F::mse_loss(chosen, residual);
    reconstruction = reconstruction + chosen;
    residual = residual - chosen.detach();
    levels.push_back(indices);
  }
  const auto indices = torch::stack(levels, 1);  // N x L
  usage_.record(indices);
  Quantized out;
  out.loss = loss;
  out.quantized = reconstruction.view({b, h, w, d}).permute({0, 3, 1, 2});
  out.indices = indices.view({b, h, w, options_.levels});
  return out;
}

absl::Status ResidualQuantizer::keep_codes(const torch::Tensor& keep) {
  return keep_codebook_rows(keep, options_.levels, {codebooks_}, options_.codes, usage_);
}

}  // namespace protoquant::quantizers
