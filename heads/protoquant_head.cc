#include "protoquant_head.h"

#include "presence.h"
#include "presence_cpu.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace protoquant::heads {

ProtoQuantHead::ProtoQuantHead(const torch::Tensor& prototypes, int64_t num_classes, int64_t groups,
                               const ProtoQuantHeadOptions& options)
    : options_(options), groups_(groups) {
  TORCH_CHECK(groups >= 1 && prototypes.size(0) % groups == 0, "protoquant head: ", prototypes.size(0),
              " prototypes do not split into ", groups, " sub-spaces");
  prototypes_ = register_parameter("prototypes", prototypes.detach().clone(), options.train_prototypes);
  weight_ = register_parameter(
      "weight", torch::randn({num_classes, prototypes.size(0)}, prototypes.options()) * options.weight_std +
                    options.weight_mean);
  competitors_ = register_buffer("competitors", torch::zeros({0, prototypes.size(1)}, prototypes.options()));
}

HeadOutput ProtoQuantHead::forward(const torch::Tensor& stored) {
  const int64_t m = groups_, sub = prototypes_.size(1);
  // 16-bit features: bf16 ones go straight into the bf16 training step's rows; anything else
  // computes in fp32 (the prototypes' dtype).
  const bool direct = stored.scalar_type() == torch::kBFloat16 && options_.bf16 && fused_training_step() &&
                      !stored.requires_grad();
  const auto features = direct || stored.scalar_type() == prototypes_.scalar_type()
                            ? stored
                            : stored.to(prototypes_.scalar_type());
  TORCH_CHECK(features.dim() == 4 && features.size(1) == m * sub,
              fmt::format("protoquant head expects B x {} x H x W features, got {}", m * sub,
                          fmt::join(features.sizes(), "x")));
  // The B x H x W x P similarity tensors dominate the cost. glibc serves blocks above 32 MiB with
  // fresh mmap'ed pages, which fault in at ~1 GB/s on these machines (measured: a PQ head with
  // P = 2048 ran 8x slower than its FLOPs); chunks of at most 16 MiB come from the reused heap.
  const int64_t cells = features.size(2) * features.size(3) * prototypes_.size(0);
  const int64_t per_chunk = std::max<int64_t>(1, (int64_t{16} << 20) / (cells * features.element_size()));
  if (features.size(0) <= per_chunk) return forward_chunk(features);
  std::vector<torch::Tensor> presence, similarity;
  for (int64_t begin = 0; begin < features.size(0); begin += per_chunk) {
    HeadOutput part = forward_chunk(features.slice(0, begin, std::min(features.size(0), begin + per_chunk)));
    presence.push_back(part.presence);
    if (part.similarity.defined()) similarity.push_back(part.similarity);
  }
  HeadOutput out;
  out.presence = torch::cat(presence);
  out.logits = class_logits(out.presence);
  if (!similarity.empty()) out.similarity = torch::cat(similarity);
  return out;
}

torch::Tensor ProtoQuantHead::class_logits(const torch::Tensor& presence) {
  auto logits = torch::mm(presence, torch::relu(weight_).t());
  if (is_training() && options_.pipnet_logits) logits = torch::log1p(logits.pow(2));
  return logits;
}

HeadOutput ProtoQuantHead::forward_chunk(const torch::Tensor& features) {
  const int64_t m = groups_, sub = prototypes_.size(1);
  const int64_t b = features.size(0), h = features.size(2), w = features.size(3);
  const int64_t p = prototypes_.size(0), k = p / m, n = b * h * w;
  // Cosine similarity of every cell to every prototype as one GEMM per sub-space (one GEMM in
  // all when there is a single sub-space): (M x B*H*W x d) (M x d x K).
  const int64_t q = competitors_.size(0);  // 0 unless prototypes were removed by editing
  const auto e = (q == 0 ? prototypes_ : torch::cat({prototypes_, competitors_})).view({m, k + q, sub});
  // The GEMMs run in the compute dtype (bf16: oneDNN's bf16 kernels, fp32 accumulation),
  // everything after the head's output in fp32.
  const auto compute = options_.bf16 ? torch::kBFloat16 : features.scalar_type();
  auto normalised_cells = [&] {  // M x B*H*W x d in the compute dtype
    const auto z = features.permute({0, 2, 3, 1}).reshape({n, m, sub}).transpose(0, 1);
    return (z / z.norm(2, 2, true).clamp_min(options_.eps)).to(compute);
  };
  HeadOutput out;
  if (fused_training_step()) {
    // Training needs neither the similarity maps nor the softmax outside its max: one fused node.
    // Frozen features (the usual case) go in raw, in one copy that also converts them, with their
    // inverse norms as the node's row scale: no pass to normalise them.
    torch::Tensor rows, row_scale;
    if (features.requires_grad()) {
      rows = normalised_cells();
    } else {
      std::tie(rows, row_scale) = cells_and_inverse_norms(features, m, compute, options_.eps);
      if (!rows.defined()) {  // not an fp32 CPU map: the same with ATen operations
        rows = torch::empty({b, h, w, m * sub}, features.options().dtype(compute))
                   .copy_(features.permute({0, 2, 3, 1}))
                   .view({n, m, sub})
                   .transpose(0, 1);
        // square().sum() rather than linalg_vector_norm: the latter reduces this strided axis ~10x slower.
        row_scale = features.view({b, m, sub, h, w})
                        .square()
                        .sum(2, false, torch::kFloat32)
                        .sqrt_()
                        .clamp_min_(options_.eps)
                        .reciprocal()
                        .permute({1, 0, 2, 3})
                        .reshape({m, n});
      }
    }
    const auto presence = prototype_presence(rows, e, b, options_.temperature, row_scale, options_.eps)
                              .to(prototypes_.scalar_type());
    out.presence = presence.permute({1, 0, 2}).reshape({b, p});
    out.logits = class_logits(out.presence);
    return out;
  }
  // Everything below stays in the GEMM's M x (B*H*W) x K layout, so the largest tensors are never
  // copied into another layout. 1/tau is folded into the (small) prototype side.
  const auto en = e / e.norm(2, 2, true).clamp_min(options_.eps);
  const auto ec = en.mul(1.0 / options_.temperature).to(compute);
  auto scaled = torch::bmm(normalised_cells(), ec.transpose(1, 2));  // S / tau
  // Softmax over the prototypes of one sub-space, then the max over locations.
  auto soft = torch::softmax(scaled, 2);
  if (q > 0) {
    soft = soft.narrow(2, 0, k);
    scaled = scaled.narrow(2, 0, k).contiguous();
  }
  const auto presence = soft.reshape({m, b, h * w, k}).amax(2).to(features.scalar_type());  // M x B x K
  out.presence = presence.permute({1, 0, 2}).reshape({b, p});
  out.logits = class_logits(out.presence);
  // The similarity maps (explanations, metrics) cost a pass over the largest tensor: training
  // does not need them.
  if (!is_training()) {
    out.similarity = (scaled.to(features.scalar_type()) * options_.temperature)
                         .view({m, b, h, w, k})
                         .permute({1, 0, 4, 2, 3})
                         .reshape({b, p, h, w});
  }
  return out;
}

torch::Tensor ProtoQuantHead::regularization() {
  if (options_.sparsity <= 0.0) return {};
  return options_.sparsity * torch::relu(weight_).sum();
}

absl::Status ProtoQuantHead::set_class_weights(const torch::Tensor& weights) {
  if (!weights.defined() || !weights.sizes().equals(weight_.sizes())) {
    return absl::InvalidArgumentError(fmt::format("class weights must be {}", fmt::join(weight_.sizes(), " x ")));
  }
  if (!torch::isfinite(weights).all().item<bool>() || weights.lt(0).any().item<bool>()) {
    return absl::InvalidArgumentError("class weights must be finite and non-negative");
  }
  torch::NoGradGuard no_grad;
  weight_.copy_(weights);
  return absl::OkStatus();
}

absl::Status ProtoQuantHead::keep_prototypes(const torch::Tensor& keep, bool keep_in_softmax) {
  if (groups_ != 1) {
    // The softmax runs per PQ sub-space over equally many sub-prototypes; removing some from one
    // sub-space only would need ragged groups.
    return absl::UnimplementedError("removing prototypes from a head with PQ sub-spaces is not supported");
  }
  const int64_t p = prototypes_.size(0);
  if (!keep.defined() || keep.dim() != 1 || keep.scalar_type() != torch::kInt64 || keep.numel() < 1 ||
      keep.min().item<int64_t>() < 0 || keep.max().item<int64_t>() >= p ||
      std::get<0>(at::_unique(keep)).numel() != keep.numel()) {
    return absl::InvalidArgumentError(fmt::format("prototypes to keep must be distinct int64 indices in [0, {})", p));
  }
  torch::NoGradGuard no_grad;
  const auto index = keep.to(prototypes_.device());
  if (keep_in_softmax) {
    auto removed = torch::ones({p}, torch::kBool);
    removed.index_fill_(0, keep.cpu(), false);
    const auto gone = removed.nonzero().squeeze(1).to(prototypes_.device());
    competitors_.set_data(torch::cat({competitors_, prototypes_.detach().index_select(0, gone)}));
  }
  prototypes_.set_data(prototypes_.index_select(0, index));
  weight_.set_data(weight_.index_select(1, index));
  return absl::OkStatus();
}

absl::Status ProtoQuantHead::hold_class_weights(const torch::Tensor& mask) { return hold_outside_mask(weight_, mask); }

}  // namespace protoquant::heads
