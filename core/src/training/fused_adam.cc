#include "protoquant/fused_adam.h"

#include <cmath>

#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include "protoquant/cpu_loops.h"

namespace protoquant {
namespace {

// Scalars as ATen receives them from Adam::step: computed in double, rounded to float once.
struct Coefficients {
  float beta1, one_minus_beta1, beta2, one_minus_beta2, weight_decay, eps, step_size, sqrt_correction2;
};

// The arithmetic of Adam::step in ATen's order, per element:
//   g = grad + wd p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//   p -= step_size m / (sqrt(v) / sqrt(1 - b2^t) + eps).
template <bool kDecay>
inline __attribute__((always_inline)) void adam_update_of(float* p, const float* grad, float* m, float* v, int64_t n,
                                                       const Coefficients& c) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float g = kDecay ? grad[i] + c.weight_decay * p[i] : grad[i];  // as ATen, no 0 * p without decay
    m[i] = m[i] * c.beta1 + c.one_minus_beta1 * g;
    v[i] = v[i] * c.beta2 + c.one_minus_beta2 * g * g;
    p[i] -= c.step_size * m[i] / (std::sqrt(v[i]) / c.sqrt_correction2 + c.eps);
  }
}

PQ_CPU_CLONES void adam_update(float* p, const float* grad, float* m, float* v, int64_t n, Coefficients c) {
  if (c.weight_decay != 0.0f) {
    adam_update_of<true>(p, grad, m, v, n, c);
  } else {
    adam_update_of<false>(p, grad, m, v, n, c);
  }
}

bool dense_fp32_like(const torch::Tensor& t, const torch::Tensor& p) {
  return t.defined() && !t.is_sparse() && t.device().is_cpu() && t.scalar_type() == torch::kFloat32 &&
         t.is_contiguous() && t.sizes() == p.sizes();
}

}  // namespace

bool FusedAdam::fusable(const torch::Tensor& p, const torch::optim::AdamOptions& options) const {
  if (options.amsgrad() || !dense_fp32_like(p, p) || !dense_fp32_like(p.grad(), p)) return false;
  // Existing moments (from earlier steps or a loaded checkpoint) must fit the parameter too.
  const auto found = state_.find(c10::guts::to_string(p.unsafeGetTensorImpl()));
  if (found == state_.end()) return true;
  const auto& state = static_cast<const torch::optim::AdamParamState&>(*found->second);
  return dense_fp32_like(state.exp_avg(), p) && dense_fp32_like(state.exp_avg_sq(), p);
}

torch::Tensor FusedAdam::step(LossClosure closure) {
  torch::Tensor loss;
  if (closure != nullptr) {  // first, as Adam::step does: the gradients to check come from it
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups_) {
    const auto& options = static_cast<const torch::optim::AdamOptions&>(group.options());
    for (auto& p : group.params()) {
      if (p.grad().defined() && !fusable(p, options)) {
        torch::optim::Adam::step();  // the whole step, its closure already run
        return loss;
      }
    }
  }
  at::NoGradGuard no_grad;
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
                           static_cast<float>(1.0 - beta1),
                           static_cast<float>(beta2),
                           static_cast<float>(1.0 - beta2),
                           static_cast<float>(options.weight_decay()),
                           static_cast<float>(options.eps()),
                           static_cast<float>(options.lr() / correction1),
                           static_cast<float>(std::sqrt(correction2))};
      float* param = p.data_ptr<float>();
      const float* grad = p.grad().data_ptr<float>();
      float* m = state.exp_avg().data_ptr<float>();
      float* v = state.exp_avg_sq().data_ptr<float>();
      at::parallel_for(0, p.numel(), int64_t{1} << 16, [&](int64_t begin, int64_t end) {
        adam_update(param + begin, grad + begin, m + begin, v + begin, end - begin, c);
      });
      // Written through raw pointers: tell autograd, as the in-place operations would have.
      for (auto* t : {&p, &state.exp_avg(), &state.exp_avg_sq()}) t->unsafeGetTensorImpl()->bump_version();
    }
  }
  return loss;
}

}  // namespace protoquant
