// protoquant::BatchNorm2d's synchronised path (batch_norm.h), over collectives().
#include "protoquant/batch_norm.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "protoquant/collectives.h"

namespace protoquant {

namespace {

// y = sum over the ranks of x, with the gradient that makes data parallelism exact: every rank's
// loss depends on every rank's x through y, so dL/dx on a rank is the sum of all ranks' dL/dy.
class AllReduceSum : public torch::autograd::Function<AllReduceSum> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext*, const torch::Tensor& x) {
    auto y = x.clone();
    collectives().all_reduce_sum({y});
    return y;
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext*, torch::autograd::tensor_list grads) {
    auto g = grads[0].contiguous().clone();
    collectives().all_reduce_sum({g});
    return {g};
  }
};

}  // namespace

BatchNorm2dImpl::BatchNorm2dImpl(const torch::nn::BatchNormOptions& options_) : options(options_) { reset(); }

void BatchNorm2dImpl::reset() {
  const int64_t n = options.num_features();
  if (options.affine()) {
    weight = register_parameter("weight", torch::ones({n}));
    bias = register_parameter("bias", torch::zeros({n}));
  }
  if (options.track_running_stats()) {
    running_mean = register_buffer("running_mean", torch::zeros({n}));
    running_var = register_buffer("running_var", torch::ones({n}));
    num_batches_tracked = register_buffer("num_batches_tracked", torch::tensor(0, torch::kLong));
  }
}

double BatchNorm2dImpl::next_momentum() {
  num_batches_tracked.add_(1);
  return options.momentum().has_value() ? *options.momentum()
                                        : 1.0 / static_cast<double>(num_batches_tracked.item<int64_t>());
}

torch::Tensor BatchNorm2dImpl::forward(const torch::Tensor& input) {
  TORCH_CHECK(input.dim() == 4, "BatchNorm2d expects N x C x H x W, got ", input.sizes());
  if (folded_) {
    TORCH_CHECK(!is_training(), "a BatchNorm2d folded into its convolution cannot train");
    return input;
  }
  if (synchronised_ && is_training() && collectives().world_size() > 1) return synchronised_forward(input);
  // torch::nn::BatchNorm2d's computation.
  const bool batch_moments = is_training() || !options.track_running_stats();
  double momentum = 0.0;
  if (is_training() && options.track_running_stats()) {
    torch::NoGradGuard no_grad;
    momentum = next_momentum();
  }
  return torch::batch_norm(input, weight, bias, running_mean, running_var, batch_moments, momentum, options.eps(),
                           at::globalContext().userEnabledCuDNN());
}

torch::Tensor BatchNorm2dImpl::synchronised_forward(const torch::Tensor& input) {
  const int64_t channels = input.size(1);
  const std::vector<int64_t> reduce = {0, 2, 3};
  const auto view = [&](const torch::Tensor& t) { return t.view({1, channels, 1, 1}); };
  // Two passes (sum, then centred squares) rather than sum and sum of squares: no cancellation
  // when the mean is large against the spread. Row counts may differ by one between ranks.
  const double rows = static_cast<double>(input.numel() / std::max<int64_t>(channels, 1));
  const auto sums = AllReduceSum::apply(torch::cat({input.sum(reduce), torch::full({1}, rows, input.options())}));
  const double total = sums[channels].item<double>();
  const auto mean = sums.slice(0, 0, channels) / total;
  const auto centred = input - view(mean);
  const auto var = AllReduceSum::apply(centred.square().sum(reduce)) / total;
  auto output = centred * view(torch::rsqrt(var + options.eps()));
  if (options.affine()) output = output * view(weight) + view(bias);
  if (options.track_running_stats()) {
    torch::NoGradGuard no_grad;
    const double momentum = next_momentum();
    running_mean.mul_(1.0 - momentum).add_(mean.detach(), momentum);
    // The running variance is unbiased, as torch's batch norm keeps it.
    running_var.mul_(1.0 - momentum).add_(var.detach() * (total / std::max(1.0, total - 1.0)), momentum);
  }
  return output;
}

void BatchNorm2dImpl::pretty_print(std::ostream& stream) const {
  stream << fmt::format("protoquant::BatchNorm2d({}, eps={}, affine={}, track_running_stats={}{}{})",
                        options.num_features(), options.eps(), options.affine(), options.track_running_stats(),
                        synchronised_ ? ", synchronised" : "", folded_ ? ", folded" : "");
}

absl::StatusOr<int> synchronise_batch_norm(torch::nn::Module& module, bool on) {
  int count = 0;
  for (const auto& item : module.named_modules("", /*include_self=*/true)) {
    torch::nn::Module* m = item.value().get();
    if (auto* bn = dynamic_cast<BatchNorm2dImpl*>(m); bn != nullptr) {
      bn->synchronise(on);
      ++count;
    } else if (on && (dynamic_cast<torch::nn::BatchNorm1dImpl*>(m) != nullptr ||
                      dynamic_cast<torch::nn::BatchNorm2dImpl*>(m) != nullptr ||
                      dynamic_cast<torch::nn::BatchNorm3dImpl*>(m) != nullptr)) {
      return absl::FailedPreconditionError(
          fmt::format("sync_batchnorm: batch norm '{}' ({}) cannot synchronise its moments; build it as "
                      "protoquant::BatchNorm2d (protoquant/batch_norm.h)",
                      item.key().empty() ? std::string("(the module itself)") : item.key(), m->name()));
    }
  }
  return count;
}

namespace {

// Every (conv, batch norm) pair fold_batch_norm folds: a BatchNorm2d right after a Conv2d among
// one parent's children, with running statistics and the conv's output channels.
std::vector<std::pair<torch::nn::Conv2dImpl*, BatchNorm2dImpl*>> conv_bn_pairs(torch::nn::Module& module) {
  std::vector<std::pair<torch::nn::Conv2dImpl*, BatchNorm2dImpl*>> pairs;
  for (const auto& parent : module.modules(/*include_self=*/true)) {
    const auto children = parent->children();
    for (size_t i = 0; i + 1 < children.size(); ++i) {
      auto* conv = dynamic_cast<torch::nn::Conv2dImpl*>(children[i].get());
      auto* bn = dynamic_cast<BatchNorm2dImpl*>(children[i + 1].get());
      if (conv != nullptr && bn != nullptr && !bn->folded() && bn->options.track_running_stats() &&
          conv->weight.size(0) == bn->options.num_features()) {
        pairs.emplace_back(conv, bn);
      }
    }
  }
  return pairs;
}

}  // namespace

int foldable_batch_norms(torch::nn::Module& module) { return static_cast<int>(conv_bn_pairs(module).size()); }

int fold_batch_norm(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  const auto pairs = conv_bn_pairs(module);
  for (const auto& [conv, bn] : pairs) {
    // y = (conv(x) - mean) / sqrt(var + eps) * gamma + beta = conv'(x), per output channel.
    auto scale = torch::rsqrt(bn->running_var + bn->options.eps());
    if (bn->options.affine()) scale = scale * bn->weight;
    auto bias = conv->bias.defined() ? conv->bias.detach().clone() : torch::zeros_like(bn->running_mean);
    bias = (bias - bn->running_mean) * scale;
    if (bn->options.affine()) bias = bias + bn->bias;
    conv->weight.mul_(scale.view({-1, 1, 1, 1}));
    if (conv->bias.defined()) {
      conv->bias.copy_(bias);
    } else {
      // A conv built without bias holds an undefined one under its "bias" name, which cannot be
      // registered again: its forward reads the member, so the member takes the folded bias
      // (not among parameters(): a folded copy is neither trained nor saved).
      conv->bias = bias;
    }
    bn->mark_folded();
  }
  return static_cast<int>(pairs.size());
}

}  // namespace protoquant
