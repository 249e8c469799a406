#include "protoquant/fused_adam.h"

#include <cmath>

#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include "protoquant/cpu_loops.h"

namespace protoquant {
namespace {

struct Coefficients {
  float beta1, beta2, weight_decay, eps, step_size, inverse_sqrt_correction2;
};

// The arithmetic of Adam::step in ATen's order, per element:
//   g = grad + wd p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//   p -= step_size m / (sqrt(v) / sqrt(1 - b2^t) + eps).
PQ_CPU_CLONES void adam_update(float* p, const float* grad, float* m, float* v, int64_t n, Coefficients c) {
  const float one_minus_beta1 = 1.0f - c.beta1, one_minus_beta2 = 1.0f - c.beta2;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i] + c.weight_decay * p[i];
    m[i] = m[i] * c.beta1 + one_minus_beta1 * g;
    v[i] = v[i] * c.beta2 + one_minus_beta2 * g * g;
    p[i] -= c.step_size * m[i] / (std::sqrt(v[i]) * c.inverse_sqrt_correction2 + c.eps);
  }
}

bool fusable(const torch::Tensor& p, const torch::optim::AdamOptions& options) {
  const auto& grad = p.grad();
  return !options.amsgrad() && p.device().is_cpu() && p.scalar_type() == torch::kFloat32 && p.is_contiguous() &&
         !grad.is_sparse() && grad.device().is_cpu() && grad.scalar_type() == torch::kFloat32 &&
         grad.is_contiguous();
}

}  // namespace

torch::Tensor FusedAdam::step(LossClosure closure) {
  for (auto& group : param_groups_) {
    const auto& options = static_cast<const torch::optim::AdamOptions&>(group.options());
    for (auto& p : group.params()) {
      if (p.grad().defined() && !fusable(p, options)) return torch::optim::Adam::step(std::move(closure));
    }
  }
  at::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure != nullptr) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups_) {
    const auto& options = static_cast<const torch::optim::AdamOptions&>(group.options());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      // The state under the key Adam::step uses, created as it creates it.
      const std::string key = c10::guts::to_string(p.unsafeGetTensorImpl());
      auto found = state_.find(key);
      if (found == state_.end()) {
        auto state = std::make_unique<torch::optim::AdamParamState>();
        state->step(0);
        state->exp_avg(at::zeros_like(p, at::MemoryFormat::Preserve));
        state->exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
        found = state_.emplace(key, std::move(state)).first;
      }
      auto& state = static_cast<torch::optim::AdamParamState&>(*found->second);
      state.step(state.step() + 1);
      const auto [beta1, beta2] = options.betas();
      const double correction1 = 1.0 - std::pow(beta1, state.step());
      const double correction2 = 1.0 - std::pow(beta2, state.step());
      const Coefficients c{static_cast<float>(beta1),
                           static_cast<float>(beta2),
                           static_cast<float>(options.weight_decay()),
                           static_cast<float>(options.eps()),
                           static_cast<float>(options.lr() / correction1),
                           static_cast<float>(1.0 / std::sqrt(correction2))};
      float* param = p.data_ptr<float>();
      const float* grad = p.grad().data_ptr<float>();
      float* m = state.exp_avg().data_ptr<float>();
      float* v = state.exp_avg_sq().data_ptr<float>();
      at::parallel_for(0, p.numel(), int64_t{1} << 16, [&](int64_t begin, int64_t end) {
        adam_update(param + begin, grad + begin, m + begin, v + begin, end - begin, c);
      });
    }
  }
  return loss;
}

}  // namespace protoquant
