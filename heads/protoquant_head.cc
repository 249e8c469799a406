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
  const int64_t b = features.size(0), h = features.size(2), w = features.size(3);
  const int64_t p = prototypes_.size(0), k = p / m, n = b * h * w;
  // Cosine similarity of every cell to every prototype as one GEMM per sub-space (one GEMM in
  // all when there is a single sub-space): (M x B*H*W x d) (M x d x K).
  const auto z = features.permute({0, 2, 3, 1}).reshape({n, m, sub}).transpose(0, 1);
  const auto zn = z / z.norm(2, 2, true).clamp_min(options_.eps);
  const auto e = prototypes_.view({m, k, sub});
  const auto en = e / e.norm(2, 2, true).clamp_min(options_.eps);
  const auto s = torch::bmm(zn, en.transpose(1, 2)).permute({1, 0, 2}).reshape({b, h * w, m, k});
  // Softmax over the prototypes of one sub-space, then the max over locations.
  const auto a = torch::softmax(s / options_.temperature, 3).amax(1).reshape({b, p});  // B x P
  HeadOutput out;
  out.presence = a;
  out.logits = torch::mm(a, torch::relu(weight_).t());
  if (is_training() && options_.pipnet_logits) out.logits = torch::log1p(out.logits.pow(2));
  out.similarity = s.reshape({b, h, w, p}).permute({0, 3, 1, 2});
  return out;
}

torch::Tensor ProtoQuantHead::regularization() {
  if (options_.sparsity <= 0.0) return {};
  return options_.sparsity * torch::relu(weight_).sum();
}

}  // namespace protoquant::heads
