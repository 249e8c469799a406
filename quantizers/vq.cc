#include "vq.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "codebook_init.h"

namespace protoquant::quantizers {

namespace F = torch::nn::functional;

VectorQuantizer::VectorQuantizer(const VqOptions& options) : options_(options) {
  codebook_ = register_parameter("codebook", initial_codebook(options.init, options.codes, options.dim));
  usage_ = CodebookUsage(1, options.codes);
}

absl::Status VectorQuantizer::initialize(const torch::Tensor& sample) {
  if (options_.init != "kmeans") return absl::OkStatus();
  torch::NoGradGuard no_grad;
  auto centers = kmeans(sample.to(codebook_.device()), options_.codes, options_.kmeans_iterations,
                        options_.metric == "cosine");
  if (options_.metric == "cosine") {
    // Spherical k-means gives unit directions; give the codewords the data's typical norm so the
    // raw codeword substitution feeds g vectors of the right scale.
    centers = centers * sample.norm(2, 1).mean().item<double>();
  }
  codebook_.copy_(centers);
  return absl::OkStatus();
}

torch::Tensor VectorQuantizer::assign(const torch::Tensor& vectors) const {
  torch::NoGradGuard no_grad;
  if (options_.metric == "cosine") {
    // argmax_k cos(z, e_k): normalising z does not change the argmax, so only the codebook is
    // normalised and the GEMM runs on the raw vectors.
    const auto codes = F::normalize(codebook_, F::NormalizeFuncOptions().dim(1).eps(1e-6));
    return torch::mm(vectors, codes.t()).argmax(1);
  }
  // argmin |z - e|^2 = argmax (2 z.e - |e|^2).
  return torch::addmm(-codebook_.pow(2).sum(1).unsqueeze(0), vectors, codebook_.t(), 1.0, 2.0).argmax(1);
}

Quantized VectorQuantizer::quantize(const torch::Tensor& features) {
  TORCH_CHECK(features.dim() == 4 && features.size(1) == options_.dim,
              fmt::format("vq expects B x {} x H x W features, got {}", options_.dim, fmt::join(features.sizes(), "x")));
  const int64_t b = features.size(0), d = features.size(1), h = features.size(2), w = features.size(3);
  const auto flat = features.permute({0, 2, 3, 1}).reshape({-1, d});
  TORCH_CHECK(flat.detach().isfinite().all().item<bool>(), "vq: input features contain NaN or infinity");
  const auto indices = assign(flat.detach());
  usage_.record(indices);
  const auto chosen = codebook_.index_select(0, indices);  // gradient flows to the chosen codewords
  Quantized out;
  out.loss = F::mse_loss(chosen, flat.detach());
  out.quantized = chosen.view({b, h, w, d}).permute({0, 3, 1, 2});
  out.indices = indices.view({b, h, w});
  return out;
}

}  // namespace protoquant::quantizers
