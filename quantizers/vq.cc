#include "vq.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "codebook_init.h"
#include "kept_codes.h"

namespace protoquant::quantizers {

namespace F = torch::nn::functional;

VectorQuantizer::VectorQuantizer(const VqOptions& options) : options_(options), metric_(parse_metric(options.metric)) {
  codebook_ = register_parameter("codebook", initial_codebook(options.init, options.codes, options.dim));
  usage_ = CodebookUsage(1, options.codes);
}

absl::Status VectorQuantizer::initialize(const torch::Tensor& sample) {
  if (options_.init != "kmeans") return absl::OkStatus();
  torch::NoGradGuard no_grad;
  codebook_.copy_(kmeans_codebook(sample.to(codebook_.device()), options_.codes, options_.kmeans_iterations,
                                  metric_ == Metric::kCosine));
  return absl::OkStatus();
}

Quantized VectorQuantizer::quantize(const torch::Tensor& features) {
  const auto flat = feature_rows(features, options_.dim, "vq");
  const int64_t b = features.size(0), d = features.size(1), h = features.size(2), w = features.size(3);
  const auto indices = nearest_code(flat.detach(), codebook_, metric_, options_.search);
  usage_.record(indices);
  const auto chosen = codebook_.index_select(0, indices);  // gradient flows to the chosen codewords
  Quantized out;
  out.loss = F::mse_loss(chosen, flat.detach());
  out.quantized = chosen.view({b, h, w, d}).permute({0, 3, 1, 2});
  out.indices = indices.view({b, h, w});
  return out;
}

absl::Status VectorQuantizer::keep_codes(const torch::Tensor& keep) {
  return keep_codebook_rows(keep, 1, {codebook_}, options_.codes, usage_);
}

}  // namespace protoquant::quantizers
