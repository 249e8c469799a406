#include "protoquant_head.h"

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
}

HeadOutput ProtoQuantHead::forward(const torch::Tensor& features) {
  const int64_t m = groups_, sub = prototypes_.size(1);
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
  const auto z = features.permute({0, 2, 3, 1}).reshape({n, m, sub}).transpose(0, 1);
  const auto zn = z / z.norm(2, 2, true).clamp_min(options_.eps);
  const auto e = prototypes_.view({m, k, sub});
  const auto en = e / e.norm(2, 2, true).clamp_min(options_.eps);
  // Everything below stays in the GEMM's M x (B*H*W) x K layout, so the largest tensors are never
  // copied into another layout; 1/tau is folded into the (small) prototype side.
  const auto scaled = torch::bmm(zn, en.transpose(1, 2).mul(1.0 / options_.temperature));  // S / tau
  // Softmax over the prototypes of one sub-space, then the max over locations.
  const auto presence = torch::softmax(scaled, 2).view({m, b, h * w, k}).amax(2);  // M x B x K
  HeadOutput out;
  out.presence = presence.permute({1, 0, 2}).reshape({b, p});
  out.logits = class_logits(out.presence);
  // The similarity maps (explanations, metrics) cost a pass over the largest tensor: training
  // does not need them.
  if (!is_training()) {
    out.similarity = (scaled * options_.temperature).view({m, b, h, w, k}).permute({1, 0, 4, 2, 3}).reshape({b, p, h, w});
  }
  return out;
}

torch::Tensor ProtoQuantHead::regularization() {
  if (options_.sparsity <= 0.0) return {};
  return options_.sparsity * torch::relu(weight_).sum();
}

}  // namespace protoquant::heads
