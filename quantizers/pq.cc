#include "pq.h"

#include "codebook_init.h"
#include "kept_codes.h"

namespace protoquant::quantizers {

namespace F = torch::nn::functional;

ProductQuantizer::ProductQuantizer(const PqOptions& options) : options_(options), metric_(parse_metric(options.metric)) {
  TORCH_CHECK(options.dim % options.subspaces == 0, "pq: D = ", options.dim, " is not divisible by subspaces = ",
              options.subspaces);
  const int64_t sub = options.dim / options.subspaces;
  std::vector<torch::Tensor> books;
  for (int64_t m = 0; m < options.subspaces; ++m) books.push_back(initial_codebook(options.init, options.codes, sub));
  codebooks_ = register_parameter("codebooks", torch::stack(books));
  usage_ = CodebookUsage(options.subspaces, options.codes);
}

absl::Status ProductQuantizer::initialize(const torch::Tensor& sample) {
  if (options_.init != "kmeans") return absl::OkStatus();
  torch::NoGradGuard no_grad;
  const int64_t sub = codebooks_.size(2);
  const auto data = sample.to(codebooks_.device());
  for (int64_t m = 0; m < options_.subspaces; ++m) {
    codebooks_[m].copy_(kmeans_codebook(data.slice(1, m * sub, (m + 1) * sub), options_.codes,
                                        options_.kmeans_iterations, metric_ == Metric::kCosine));
  }
  return absl::OkStatus();
}

torch::Tensor ProductQuantizer::encode(const torch::Tensor& vectors) const {
  const int64_t n = vectors.size(0), m = options_.subspaces;
  // N x D -> M x N x D/M: one batched GEMM + argmax over all sub-spaces.
  const auto split = vectors.detach().view({n, m, -1}).transpose(0, 1);
  return nearest_codes(split, codebooks_, metric_, options_.search).t();  // N x M
}

torch::Tensor ProductQuantizer::decode(const torch::Tensor& codes) const {
  const int64_t n = codes.size(0), m = options_.subspaces, k = options_.codes;
  // Row m*K + code of the flattened codebooks, gathered in one index_select.
  const auto offsets = torch::arange(m, codes.options()) * k;
  const auto rows = (codes + offsets).reshape({-1});
  return codebooks_.reshape({m * k, -1}).index_select(0, rows).view({n, -1});
}

Quantized ProductQuantizer::quantize(const torch::Tensor& features) {
  const auto flat = feature_rows(features, options_.dim, "pq");
  const int64_t b = features.size(0), d = features.size(1), h = features.size(2), w = features.size(3);
  const auto codes = encode(flat);
  usage_.record(codes);
  const auto chosen = decode(codes);  // gradient flows to the chosen sub-codewords
  Quantized out;
  out.loss = F::mse_loss(chosen, flat.detach());
  out.quantized = chosen.view({b, h, w, d}).permute({0, 3, 1, 2});
  out.indices = codes.view({b, h, w, options_.subspaces});
  return out;
}

absl::Status ProductQuantizer::keep_codes(const torch::Tensor& keep) {
  return keep_codebook_rows(keep, options_.subspaces, {codebooks_}, options_.codes, usage_);
}

}  // namespace protoquant::quantizers
