#include "protoquant_head.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace protoquant::heads {

ProtoQuantHead::ProtoQuantHead(const torch::Tensor& prototypes, int64_t num_classes,
                               const ProtoQuantHeadOptions& options)
    : options_(options) {
  prototypes_ = register_parameter("prototypes", prototypes.detach().clone(), options.train_prototypes);
  weight_ = register_parameter(
      "weight", torch::randn({num_classes, prototypes.size(0)}, prototypes.options()) * options.weight_std +
                    options.weight_mean);
}

HeadOutput ProtoQuantHead::forward(const torch::Tensor& features) {
  TORCH_CHECK(features.dim() == 4 && features.size(1) == prototypes_.size(1),
              fmt::format("protoquant head expects B x {} x H x W features, got {}", prototypes_.size(1),
                          fmt::join(features.sizes(), "x")));
  const int64_t b = features.size(0), d = features.size(1), h = features.size(2), w = features.size(3);
  const int64_t p = prototypes_.size(0);
  // Cosine similarity of every cell to every prototype as one GEMM: (B*H*W x D) (D x P).
  const auto z = features.permute({0, 2, 3, 1}).reshape({b * h * w, d});
  const auto zn = z / z.norm(2, 1, true).clamp_min(options_.eps);
  const auto en = prototypes_ / prototypes_.norm(2, 1, true).clamp_min(options_.eps);
  const auto s = torch::mm(zn, en.t()).view({b, h * w, p});
  const auto a = torch::softmax(s / options_.temperature, 2).amax(1);  // B x P
  HeadOutput out;
  out.presence = a;
  out.logits = torch::mm(a, torch::relu(weight_).t());
  if (is_training() && options_.pipnet_logits) out.logits = torch::log1p(out.logits.pow(2));
  out.similarity = s.view({b, h, w, p}).permute({0, 3, 1, 2});
  return out;
}

torch::Tensor ProtoQuantHead::regularization() {
  if (options_.sparsity <= 0.0) return {};
  return options_.sparsity * torch::relu(weight_).sum();
}

}  // namespace protoquant::heads
