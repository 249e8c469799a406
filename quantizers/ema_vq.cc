#include "ema_vq.h"

#include "codebook_init.h"
#include "kept_codes.h"
#include "protoquant/collectives.h"

namespace protoquant::quantizers {

namespace F = torch::nn::functional;

EmaVectorQuantizer::EmaVectorQuantizer(const EmaVqOptions& options)
    : options_(options), metric_(parse_metric(options.metric)) {
  const auto initial = initial_codebook(options.init, options.codes, options.dim);
  codebook_ = register_buffer("codebook", initial);
  ema_count_ = register_buffer("ema_count", torch::ones({options.codes}));
  ema_sum_ = register_buffer("ema_sum", initial.clone());
  usage_ = CodebookUsage(1, options.codes);
}

absl::Status EmaVectorQuantizer::initialize(const torch::Tensor& sample) {
  if (options_.init != "kmeans") return absl::OkStatus();
  torch::NoGradGuard no_grad;
  codebook_.copy_(kmeans_codebook(sample.to(codebook_.device()), options_.codes, options_.kmeans_iterations,
                                  metric_ == Metric::kCosine));
  ema_count_.fill_(1.0);
  ema_sum_.copy_(codebook_);
  return absl::OkStatus();
}

void EmaVectorQuantizer::update(const torch::Tensor& flat, const torch::Tensor& indices) {
  torch::NoGradGuard no_grad;
  const int64_t k = options_.codes;
  const double d = options_.decay;
  auto counts = torch::bincount(indices, {}, k).to(flat.dtype());
  auto sums = torch::zeros_like(ema_sum_).index_add_(0, indices, flat);
  // Data-parallel: the statistics of the whole global batch, so every rank takes the same step
  // (each rank's own would pull its copy of the codebook towards its own share).
  Collectives& group = collectives();
  auto rows = torch::tensor({static_cast<double>(flat.size(0))}, torch::kFloat64);
  group.all_reduce_sum({counts, sums, rows});
  ema_count_.mul_(d).add_(counts, 1.0 - d);
  ema_sum_.mul_(d).add_(sums, 1.0 - d);
  const auto total = ema_count_.sum();
  const auto smoothed = (ema_count_ + options_.eps) / (total + k * options_.eps) * total;
  codebook_.copy_(ema_sum_ / smoothed.unsqueeze(1));

  if (options_.restart_threshold > 0) {
    const double expected = rows.item<double>() / static_cast<double>(k);
    const auto dead = ema_count_.lt(options_.restart_threshold * expected).nonzero().squeeze(1);
    const int64_t n_dead = dead.numel();
    if (n_dead > 0) {
      // Re-seed from random vectors of this batch, as if each had just been assigned `expected`
      // vectors equal to itself.
      const auto pick = torch::randint(flat.size(0), {n_dead}, indices.options());
      const auto seeds = flat.index_select(0, pick);
      codebook_.index_copy_(0, dead, seeds);
      ema_count_.index_fill_(0, dead, expected);
      ema_sum_.index_copy_(0, dead, seeds * expected);
      restarts_ += n_dead;
      // The dead codes are the same on every rank (the counts were reduced); their new seeds
      // are rank 0's, so the codebooks stay identical.
      if (group.world_size() > 1) group.broadcast({codebook_, ema_count_, ema_sum_}, 0);
    }
  }
}

Quantized EmaVectorQuantizer::quantize(const torch::Tensor& features) {
  const auto flat = feature_rows(features, options_.dim, "ema_vq").detach();
  const int64_t b = features.size(0), d = features.size(1), h = features.size(2), w = features.size(3);
  const auto indices = nearest_code(flat, codebook_, metric_, options_.search);
  usage_.record(indices);
  // The codewords the vectors were assigned to, before this batch moves them.
  const auto chosen = codebook_.index_select(0, indices);
  if (is_training()) update(flat, indices);
  Quantized out;
  // No trainable parameter: the codebook learns from the EMA alone; the loss is reported for
  // monitoring (quantization error) but carries no gradient.
  out.loss = F::mse_loss(chosen, flat);
  out.quantized = chosen.view({b, h, w, d}).permute({0, 3, 1, 2});
  out.indices = indices.view({b, h, w});
  return out;
}

absl::Status EmaVectorQuantizer::keep_codes(const torch::Tensor& keep) {
  return keep_codebook_rows(keep, 1, {codebook_, ema_sum_, ema_count_}, options_.codes, usage_);
}

}  // namespace protoquant::quantizers
