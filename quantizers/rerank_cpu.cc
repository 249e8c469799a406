#include "rerank_cpu.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <vector>

#include <ATen/Parallel.h>

#include "protoquant/cpu_loops.h"

namespace protoquant::quantizers {
namespace {

using cpu::bf16_bits;
constexpr int64_t kBlock = 16;  // one AVX-512 register of fp32 scores

// The `c` largest of score + bias in one row, as (value, code) sorted by value, best first.
// Almost every block of 16 scores is below the running c-th best and costs one vector max; only
// the few that are not are scanned one by one. Returns false when any score is NaN.
PQ_CPU_CLONES bool top_candidates(const bf16_bits* scores, const float* bias, int64_t k, int64_t c, float* value,
                                  int32_t* code) {
  for (int64_t j = 0; j < c; ++j) {
    value[j] = -INFINITY;
    code[j] = -1;
  }
  float block[kBlock];
  int nan = 0;
  for (int64_t begin = 0; begin < k; begin += kBlock) {
    const int64_t size = std::min(kBlock, k - begin);
    float top = -INFINITY;
#pragma omp simd reduction(max : top) reduction(| : nan)
    for (int64_t i = 0; i < size; ++i) {
      block[i] = cpu::widen(scores[begin + i]) + (bias != nullptr ? bias[begin + i] : 0.0f);
      top = block[i] > top ? block[i] : top;
      nan |= block[i] != block[i];
    }
    if (!(top > value[c - 1])) continue;
    for (int64_t i = 0; i < size; ++i) {
      if (!(block[i] > value[c - 1])) continue;
      int64_t at = c - 1;
      for (; at > 0 && value[at - 1] < block[i]; --at) {
        value[at] = value[at - 1];
        code[at] = code[at - 1];
      }
      value[at] = block[i];
      code[at] = static_cast<int32_t>(begin + i);
    }
  }
  return nan == 0;
}

PQ_CPU_CLONES float dot(const float* a, const float* b, int64_t d) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < d; ++i) sum += a[i] * b[i];
  return sum;
}

}  // namespace

bool rerank_cpu_supports(const torch::Tensor& scores, const torch::Tensor& vectors) {
  return scores.device().is_cpu() && vectors.device().is_cpu() && scores.scalar_type() == torch::kBFloat16 &&
         vectors.scalar_type() == torch::kFloat32 && scores.dim() == 3 && scores.is_contiguous() &&
         vectors.dim() == 3 && vectors.stride(2) == 1;
}

torch::Tensor rerank_candidates(const torch::Tensor& scores, const torch::Tensor& vectors,
                                const torch::Tensor& weights_in, const torch::Tensor& bias_in, int64_t candidates) {
  TORCH_CHECK(rerank_cpu_supports(scores, vectors), "rerank: CPU bf16 scores and fp32 vectors expected");
  const int64_t m = scores.size(0), n = scores.size(1), k = scores.size(2), d = vectors.size(2);
  TORCH_CHECK(vectors.size(0) == m && vectors.size(1) == n && weights_in.size(0) == m && weights_in.size(1) == k &&
                  weights_in.size(2) == d,
              "rerank: scores M x n x K, vectors M x n x d and weights M x K x d expected");
  const auto weights = weights_in.to(torch::kFloat32).contiguous();
  const auto bias = bias_in.defined() ? bias_in.to(torch::kFloat32).reshape({m, k}).contiguous() : bias_in;
  const int64_t c = std::max<int64_t>(1, std::min(candidates, k));
  auto out = torch::empty({m, n}, scores.options().dtype(torch::kInt64));
  const auto* s = reinterpret_cast<const bf16_bits*>(scores.data_ptr());
  const float* v = vectors.data_ptr<float>();
  const float* w = weights.data_ptr<float>();
  const float* b = bias.defined() ? bias.data_ptr<float>() : nullptr;
  int64_t* result = out.data_ptr<int64_t>();
  const int64_t group_stride = vectors.stride(0), row_stride = vectors.stride(1);
  std::atomic<bool> finite{true};
  at::parallel_for(0, m * n, 64, [&](int64_t begin, int64_t end) {
    std::vector<float> value(c);
    std::vector<int32_t> code(c);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t g = row / n, i = row % n;
      const float* group_bias = b != nullptr ? b + g * k : nullptr;
      if (!top_candidates(s + row * k, group_bias, k, c, value.data(), code.data())) finite = false;
      const float* vector = v + g * group_stride + i * row_stride;
      int32_t best = code[0];
      float best_score = -INFINITY;
      for (int64_t j = 0; j < c && code[j] >= 0; ++j) {
        const float exact = dot(vector, w + (g * k + code[j]) * d, d) + (group_bias ? group_bias[code[j]] : 0.0f);
        if (exact > best_score || (exact == best_score && code[j] < best)) {
          best_score = exact;
          best = code[j];
        }
      }
      result[row] = best;
    }
  });
  TORCH_CHECK(finite.load(), "nearest-code search: NaN scores (NaN in the codebook?)");
  return out;
}

}  // namespace protoquant::quantizers
