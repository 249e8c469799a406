#include "presence_cpu.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include <ATen/Parallel.h>

#include "presence_avx512.h"
#include "protoquant/cpu_loops.h"

namespace protoquant::heads {
namespace {

using cpu::bf16_bits;

// exp(x) to 1e-7 relative for x in [-87, 88] (Cephes' expf: range reduction by ln 2 and a
// degree-6 polynomial), branch-free so that it vectorises; std::exp does not.
inline float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float shifted = x * 1.44269504088896341f + 12582912.0f;  // round(x / ln 2) in the low bits
  const float n = shifted - 12582912.0f;
  const int32_t exponent = __builtin_bit_cast(int32_t, shifted) - 0x4B400000;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * __builtin_bit_cast(float, static_cast<uint32_t>(exponent + 127) << 23);
}

inline float load(const float* p, int64_t i) { return p[i]; }
inline float load(const bf16_bits* p, int64_t i) { return cpu::widen(p[i]); }
inline void store(float* p, int64_t i, float v) { p[i] = v; }
inline void store(bf16_bits* p, int64_t i, float v) { p[i] = cpu::narrow(v); }
// For the softmax output, in [0, 1] whenever its row sum passed the finiteness check.
inline void store_finite(float* p, int64_t i, float v) { p[i] = v; }
inline void store_finite(bf16_bits* p, int64_t i, float v) { p[i] = cpu::narrow_finite(v); }

// e = exp(scale * s - max), returns sum(e).
template <typename T>
inline __attribute__((always_inline)) float exp_row_of(const T* s, float scale, float* e, int64_t k) {
  float top = -INFINITY;
#pragma omp simd reduction(max : top)
  for (int64_t i = 0; i < k; ++i) {
    const float v = load(s, i) * scale;
    e[i] = v;
    top = v > top ? v : top;
  }
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < k; ++i) {
    e[i] = exp_approx(e[i] - top);
    sum += e[i];
  }
  return sum;
}

// y = e * inverse_sum, and the running max over the image's cells.
template <typename T>
inline __attribute__((always_inline)) void finish_row_of(const float* e, float inverse_sum, T* y, float* best,
                                                      int32_t* cell_of_best, int32_t cell, int64_t k) {
#pragma omp simd
  for (int64_t i = 0; i < k; ++i) {
    const float v = e[i] * inverse_sum;
    store_finite(y, i, v);
    const bool better = v > best[i];
    best[i] = better ? v : best[i];
    cell_of_best[i] = better ? cell : cell_of_best[i];
  }
}

// y = scale * ([argmax == cell] w - y * s_cell), in place.
template <typename T>
inline __attribute__((always_inline)) void backward_row_of(T* y, const float* w, const int32_t* cell_of_best,
                                                        int32_t cell, float s_cell, float scale, int64_t k) {
#pragma omp simd
  for (int64_t i = 0; i < k; ++i) {
    const float sparse = cell_of_best[i] == cell ? w[i] : 0.0f;
    store(y, i, (sparse - load(y, i) * s_cell) * scale);
  }
}

// The row functions for each storage type, cloned per instruction set (cpu_loops.h).
PQ_CPU_CLONES float exp_row(const float* s, float scale, float* e, int64_t k) { return exp_row_of(s, scale, e, k); }
PQ_CPU_CLONES float exp_row(const bf16_bits* s, float scale, float* e, int64_t k) {
  return exp_row_of(s, scale, e, k);
}
PQ_CPU_CLONES void finish_row(const float* e, float inv, float* y, float* best, int32_t* at, int32_t cell,
                              int64_t k) {
  finish_row_of(e, inv, y, best, at, cell, k);
}
PQ_CPU_CLONES void finish_row(const float* e, float inv, bf16_bits* y, float* best, int32_t* at, int32_t cell,
                              int64_t k) {
  finish_row_of(e, inv, y, best, at, cell, k);
}
PQ_CPU_CLONES void backward_row(float* y, const float* w, const int32_t* at, int32_t cell, float s_cell, float scale,
                                int64_t k) {
  backward_row_of(y, w, at, cell, s_cell, scale, k);
}
PQ_CPU_CLONES void backward_row(bf16_bits* y, const float* w, const int32_t* at, int32_t cell, float s_cell,
                                float scale, int64_t k) {
  backward_row_of(y, w, at, cell, s_cell, scale, k);
}

// Copies one cell's d values, rounded to T, and returns the sum of their squares as rounded.
template <typename T>
inline __attribute__((always_inline)) float copy_row_of(const float* in, T* out, int64_t d) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < d; ++i) {
    store(out, i, in[i]);
    const float v = load(out, i);
    sum += v * v;
  }
  return sum;
}

PQ_CPU_CLONES float copy_row(const float* in, float* out, int64_t d) { return copy_row_of(in, out, d); }
PQ_CPU_CLONES float copy_row(const float* in, bf16_bits* out, int64_t d) { return copy_row_of(in, out, d); }

// The sum of squares of one cell's d bf16 values: the norm of features used as stored.
PQ_CPU_CLONES float sum_of_squares(const bf16_bits* in, int64_t d) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < d; ++i) {
    const float v = cpu::widen(in[i]);
    sum += v * v;
  }
  return sum;
}

// For every cell n and sub-space g of an N x (G*d) row-major map: inverse_norm[g, n] =
// 1 / max(sqrt(sum_of_squares_at(offset)), eps), where sum_of_squares_at reads (and may copy)
// the d values at that offset.
template <typename SumOfSquares>
void inverse_norms_of_cells(float* inverse_norm, int64_t n, int64_t groups, int64_t d, float eps,
                            const SumOfSquares& sum_of_squares_at) {
  at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
    for (int64_t cell = begin; cell < end; ++cell) {
      for (int64_t g = 0; g < groups; ++g) {
        const float norm = std::sqrt(sum_of_squares_at(cell * groups * d + g * d));
        inverse_norm[g * n + cell] = 1.0f / std::max(norm, eps);
      }
    }
  });
}

// Copies fp32 cells into rows of T, with the inverse norms of the rows as stored.
template <typename T>
void copy_cells(const float* in, T* out, float* inverse_norm, int64_t n, int64_t groups, int64_t d, float eps) {
  inverse_norms_of_cells(inverse_norm, n, groups, d, eps,
                         [&](int64_t offset) { return copy_row(in + offset, out + offset, d); });
}

// One prototype row: out = e * (scale / max(|e|, eps)); returns the clamped norm.
template <typename T>
inline __attribute__((always_inline)) float unit_row_of(const float* e, T* out, float scale, float eps, int64_t d) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < d; ++i) sum += e[i] * e[i];
  const float norm = std::max(std::sqrt(sum), eps);
  const float factor = scale / norm;
#pragma omp simd
  for (int64_t i = 0; i < d; ++i) store(out, i, e[i] * factor);
  return norm;
}

// Its gradient: g' = g scale / norm, minus its component along e unless the norm was clamped.
template <typename T>
inline __attribute__((always_inline)) void unit_row_backward_of(const T* g, const float* e, float* out, float norm,
                                                             float scale, float eps, int64_t d) {
  const float factor = scale / norm;
  float along = 0.0f;
#pragma omp simd reduction(+ : along)
  for (int64_t i = 0; i < d; ++i) along += load(g, i) * e[i];
  // (g' . u) u = (factor / norm^2) (g . e) e; nothing to remove where the norm was clamped.
  along = norm > eps ? along * factor / (norm * norm) : 0.0f;
#pragma omp simd
  for (int64_t i = 0; i < d; ++i) out[i] = load(g, i) * factor - along * e[i];
}

PQ_CPU_CLONES float unit_row(const float* e, float* out, float scale, float eps, int64_t d) {
  return unit_row_of(e, out, scale, eps, d);
}
PQ_CPU_CLONES float unit_row(const float* e, bf16_bits* out, float scale, float eps, int64_t d) {
  return unit_row_of(e, out, scale, eps, d);
}
PQ_CPU_CLONES void unit_row_backward(const float* g, const float* e, float* out, float norm, float scale, float eps,
                                     int64_t d) {
  unit_row_backward_of(g, e, out, norm, scale, eps, d);
}
PQ_CPU_CLONES void unit_row_backward(const bf16_bits* g, const float* e, float* out, float norm, float scale,
                                     float eps, int64_t d) {
  unit_row_backward_of(g, e, out, norm, scale, eps, d);
}

// Rows per task for passes over prototype rows: a few tens of thousands of values, so that the
// quickstart's 256 x 128 prototypes stay on one thread.
int64_t row_grain(int64_t d) { return std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(d, 1)); }

template <typename T>
T* data_of(torch::Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}

struct Geometry {
  int64_t groups, batch, cells, k;
};

Geometry geometry_of(const torch::Tensor& s, const torch::Tensor& row_scale, int64_t batch) {
  TORCH_CHECK(presence_cpu_supports(s), "presence: contiguous CPU fp32/bf16 similarities expected");
  TORCH_CHECK(batch > 0 && s.size(1) % batch == 0 && s.size(1) > 0, "presence: N must be a positive multiple of the batch");
  TORCH_CHECK(!row_scale.defined() || (row_scale.scalar_type() == torch::kFloat32 && row_scale.is_contiguous() &&
                                       row_scale.device() == s.device() &&
                                       row_scale.numel() == s.size(0) * s.size(1)),
              "presence: row_scale must be a contiguous fp32 G x N tensor");
  return {s.size(0), batch, s.size(1) / batch, s.size(2)};
}

template <typename T>
void forward_images(torch::Tensor& s, const torch::Tensor& row_scale, const Geometry& g, torch::Tensor& presence,
                    torch::Tensor& argmax) {
  T* y = data_of<T>(s);
  const float* scale = row_scale.defined() ? row_scale.data_ptr<float>() : nullptr;
  float* best = presence.data_ptr<float>();
  int32_t* at = argmax.data_ptr<int32_t>();
  std::atomic<bool> finite{true};
  at::parallel_for(0, g.groups * g.batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> e(g.k);
    for (int64_t image = begin; image < end; ++image) {  // image = group * batch + b
      float* image_best = best + image * g.k;
      int32_t* image_at = at + image * g.k;
      if constexpr (std::is_same_v<T, bf16_bits>) {
        if (avx512::enabled()) {
          const int64_t first = image * g.cells;
          if (!avx512::softmax_rows_and_max(y + first * g.k, scale ? scale + first : nullptr, g.cells, g.k,
                                            image_best, image_at, e.data())) {
            finite = false;
          }
          continue;
        }
      }
      std::fill(image_best, image_best + g.k, -1.0f);  // below any softmax value
      for (int64_t cell = 0; cell < g.cells; ++cell) {
        const int64_t row = image * g.cells + cell;
        const float sum = exp_row(y + row * g.k, scale ? scale[row] : 1.0f, e.data(), g.k);
        if (!std::isfinite(sum)) finite = false;
        finish_row(e.data(), 1.0f / sum, y + row * g.k, image_best, image_at, static_cast<int32_t>(cell), g.k);
      }
    }
  });
  TORCH_CHECK(finite.load(), "protoquant head: non-finite similarities (NaN or infinite features or prototypes)");
}

template <typename T>
void backward_images(torch::Tensor& y_tensor, const torch::Tensor& presence, const torch::Tensor& argmax,
                     const torch::Tensor& grad, const torch::Tensor& row_scale, const Geometry& g) {
  T* y = data_of<T>(y_tensor);
  const float* scale = row_scale.defined() ? row_scale.data_ptr<float>() : nullptr;
  const float* p = presence.data_ptr<float>();
  const float* dp = grad.data_ptr<float>();
  const int32_t* at = argmax.data_ptr<int32_t>();
  at::parallel_for(0, g.groups * g.batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> w(g.k), s_cell(g.cells);
    std::vector<int32_t> holds(g.cells);
    for (int64_t image = begin; image < end; ++image) {
      const int32_t* image_at = at + image * g.k;
      std::fill(s_cell.begin(), s_cell.end(), 0.0f);
      std::fill(holds.begin(), holds.end(), 0);
      for (int64_t i = 0; i < g.k; ++i) {  // w = dP y at the argmax cells; s = its sum per cell
        w[i] = dp[image * g.k + i] * p[image * g.k + i];
        s_cell[image_at[i]] += w[i];
        ++holds[image_at[i]];
      }
      const int64_t first = image * g.cells;
      if constexpr (std::is_same_v<T, bf16_bits>) {
        if (avx512::enabled()) {
          avx512::softmax_rows_backward(y + first * g.k, scale ? scale + first : nullptr, g.cells, g.k, w.data(),
                                        s_cell.data(), holds.data(), image_at);
          continue;
        }
      }
      for (int64_t cell = 0; cell < g.cells; ++cell) {
        const int64_t row = first + cell;
        if (holds[cell] == 0) {  // no max in this cell: dS = (0 - y * 0) * scale = 0 (y is finite)
          std::fill(y + row * g.k, y + (row + 1) * g.k, T{0});
          continue;
        }
        backward_row(y + row * g.k, w.data(), image_at, static_cast<int32_t>(cell), s_cell[cell],
                     scale ? scale[row] : 1.0f, g.k);
      }
    }
  });
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> cells_and_inverse_norms(const torch::Tensor& features, int64_t groups,
                                                                torch::ScalarType dtype, double eps) {
  const bool bf16_in = features.scalar_type() == torch::kBFloat16;
  if (!features.device().is_cpu() || features.dim() != 4 || features.size(1) % groups != 0 ||
      !(features.scalar_type() == torch::kFloat32 || (bf16_in && dtype == torch::kBFloat16)) ||
      (dtype != torch::kFloat32 && dtype != torch::kBFloat16)) {
    return {};
  }
  const int64_t b = features.size(0), dim = features.size(1), n = b * features.size(2) * features.size(3);
  const int64_t d = dim / groups;
  // N x D rows: a view of channels-last maps (backbones and the feature cache give those), a copy
  // of any other.
  const auto in = features.contiguous(at::MemoryFormat::ChannelsLast).permute({0, 2, 3, 1});
  auto inverse_norm = torch::empty({groups, n}, features.options().dtype(torch::kFloat32));
  if (bf16_in) {  // already the rows (a view of the channels-last map): only their norms to compute
    const auto* cells = reinterpret_cast<const bf16_bits*>(in.data_ptr());
    inverse_norms_of_cells(inverse_norm.data_ptr<float>(), n, groups, d, static_cast<float>(eps),
                           [&](int64_t offset) { return sum_of_squares(cells + offset, d); });
    return {in.reshape({n, groups, d}).transpose(0, 1), inverse_norm};
  }
  auto rows = torch::empty({n, dim}, features.options().dtype(dtype));
  if (dtype == torch::kBFloat16) {
    copy_cells(in.data_ptr<float>(), data_of<bf16_bits>(rows), inverse_norm.data_ptr<float>(), n, groups, d,
               static_cast<float>(eps));
  } else {
    copy_cells(in.data_ptr<float>(), rows.data_ptr<float>(), inverse_norm.data_ptr<float>(), n, groups, d,
               static_cast<float>(eps));
  }
  return {rows.view({n, groups, d}).transpose(0, 1), inverse_norm};
}

std::pair<torch::Tensor, torch::Tensor> scaled_unit_prototypes(const torch::Tensor& prototypes, double scale,
                                                               double eps, torch::ScalarType dtype) {
  if (!prototypes.device().is_cpu() || prototypes.scalar_type() != torch::kFloat32 || prototypes.dim() != 3 ||
      !prototypes.is_contiguous() || (dtype != torch::kFloat32 && dtype != torch::kBFloat16)) {
    return {};
  }
  const int64_t rows = prototypes.size(0) * prototypes.size(1), d = prototypes.size(2);
  auto out = torch::empty(prototypes.sizes(), prototypes.options().dtype(dtype));
  auto norms = torch::empty({prototypes.size(0), prototypes.size(1), 1}, prototypes.options());
  const float* e = prototypes.data_ptr<float>();
  float* norm = norms.data_ptr<float>();
  void* o = out.data_ptr();
  const auto s = static_cast<float>(scale), epsilon = static_cast<float>(eps);
  at::parallel_for(0, rows, row_grain(d), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      norm[r] = dtype == torch::kBFloat16 ? unit_row(e + r * d, static_cast<bf16_bits*>(o) + r * d, s, epsilon, d)
                                          : unit_row(e + r * d, static_cast<float*>(o) + r * d, s, epsilon, d);
    }
  });
  return {out, norms};
}

torch::Tensor scaled_unit_prototypes_backward(const torch::Tensor& grad, const torch::Tensor& prototypes,
                                              const torch::Tensor& norms, double scale, double eps) {
  if (!prototypes.device().is_cpu() || prototypes.scalar_type() != torch::kFloat32 || !prototypes.is_contiguous() ||
      !grad.device().is_cpu() || (grad.scalar_type() != torch::kFloat32 && grad.scalar_type() != torch::kBFloat16) ||
      norms.scalar_type() != torch::kFloat32 || norms.numel() != prototypes.size(0) * prototypes.size(1)) {
    return {};
  }
  TORCH_CHECK(grad.sizes() == prototypes.sizes(), "prototype gradient: G x K x d expected");
  const auto g = grad.contiguous();
  const auto n = norms.contiguous();
  const int64_t rows = prototypes.size(0) * prototypes.size(1), d = prototypes.size(2);
  auto out = torch::empty(prototypes.sizes(), prototypes.options());
  const float* e = prototypes.data_ptr<float>();
  const float* norm = n.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const auto s = static_cast<float>(scale), epsilon = static_cast<float>(eps);
  const bool bf16 = g.scalar_type() == torch::kBFloat16;
  const void* gd = g.data_ptr();
  at::parallel_for(0, rows, row_grain(d), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (bf16) {
        unit_row_backward(static_cast<const bf16_bits*>(gd) + r * d, e + r * d, o + r * d, norm[r], s, epsilon, d);
      } else {
        unit_row_backward(static_cast<const float*>(gd) + r * d, e + r * d, o + r * d, norm[r], s, epsilon, d);
      }
    }
  });
  return out;
}

bool presence_cpu_supports(const torch::Tensor& s) {
  return s.device().is_cpu() && s.dim() == 3 && s.is_contiguous() &&
         (s.scalar_type() == torch::kFloat32 || s.scalar_type() == torch::kBFloat16);
}

std::pair<torch::Tensor, torch::Tensor> softmax_max_over_cells_(torch::Tensor& s, const torch::Tensor& row_scale,
                                                                int64_t batch) {
  const Geometry g = geometry_of(s, row_scale, batch);
  auto presence = torch::empty({g.groups, g.batch, g.k}, s.options().dtype(torch::kFloat32));
  auto argmax = torch::empty({g.groups, g.batch, g.k}, s.options().dtype(torch::kInt32));
  if (s.scalar_type() == torch::kBFloat16) {
    forward_images<bf16_bits>(s, row_scale, g, presence, argmax);
  } else {
    forward_images<float>(s, row_scale, g, presence, argmax);
  }
  return {presence, argmax};
}

void softmax_max_over_cells_backward_(torch::Tensor& y, const torch::Tensor& presence, const torch::Tensor& argmax,
                                      const torch::Tensor& grad_presence, const torch::Tensor& row_scale,
                                      int64_t batch) {
  const Geometry g = geometry_of(y, row_scale, batch);
  const auto grad = grad_presence.to(torch::kFloat32).contiguous();
  TORCH_CHECK(grad.sizes() == presence.sizes() && argmax.scalar_type() == torch::kInt32,
              "presence backward: gradient, presence and argmax must be G x B x K");
  if (y.scalar_type() == torch::kBFloat16) {
    backward_images<bf16_bits>(y, presence, argmax, grad, row_scale, g);
  } else {
    backward_images<float>(y, presence, argmax, grad, row_scale, g);
  }
}

}  // namespace protoquant::heads
