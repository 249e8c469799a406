#include "presence_avx512.h"

#include <atomic>
#include <cmath>
#include <cstring>

// GCC 12 has every intrinsic below and __builtin_cpu_supports("avx512bf16").
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#include <immintrin.h>

// Per function, not per file: the library must still load and run on CPUs without AVX-512.
#define PQ_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

namespace protoquant::heads::avx512 {
namespace {

// Lanes [0, n) of 16, n <= 16: the mask for a row's last, partial vector.
PQ_AVX512_BF16 inline __mmask16 lanes(int64_t n) {
  return n >= 16 ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << n) - 1u);
}

PQ_AVX512_BF16 inline __m512 load_bf16(const uint16_t* p, __mmask16 m) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

// Round to nearest even, as the portable cpu::narrow, and NaN stays NaN; unlike it,
// vcvtneps2bf16 flushes denormals (below 2^-126) to zero.
PQ_AVX512_BF16 inline void store_bf16(uint16_t* p, __mmask16 m, __m512 v) {
  _mm256_mask_storeu_epi16(p, m, reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)));
}

// exp(x) to ~1 ulp: Cody-Waite reduction by ln 2 and the degree-6 polynomial of the portable
// exp_approx, with 2^n applied by vscalefps. x is clamped at -87 as there: exp(-87) is still a
// normal float, so no (slow) denormal arithmetic follows. NaN stays NaN (vmaxps returns its
// second operand when either is NaN).
PQ_AVX512_BF16 inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-87.0f), x);
  const __m512 n =
      _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// Without the target attribute: this runs on every CPU, and must not contain AVX-512 code itself.
bool cpu_has_avx512_bf16() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bf16");
}

std::atomic<bool> turned_on{true};

}  // namespace

bool supported() {
  static const bool yes = cpu_has_avx512_bf16();
  return yes;
}

bool enabled() { return turned_on.load(std::memory_order_relaxed) && supported(); }
void set_enabled(bool on) { turned_on = on; }

PQ_AVX512_BF16 bool softmax_rows_and_max(uint16_t* y, const float* row_scale, int64_t cells, int64_t k, float* best,
                                         int32_t* cell_of_best, float* e) {
  for (int64_t i = 0; i < k; i += 16) _mm512_mask_storeu_ps(best + i, lanes(k - i), _mm512_set1_ps(-1.0f));
  bool finite = true;
  for (int64_t cell = 0; cell < cells; ++cell) {
    uint16_t* row = y + cell * k;
    const __m512 scale = _mm512_set1_ps(row_scale ? row_scale[cell] : 1.0f);
    // The row's max of scale * s, then e = exp(scale * s - max) and its sum.
    __m512 top = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < k; i += 16) {
      const __mmask16 m = lanes(k - i);
      top = _mm512_mask_max_ps(top, m, top, _mm512_mul_ps(load_bf16(row + i, m), scale));
    }
    const float row_max = _mm512_reduce_max_ps(top);
    // An infinite scale * s: the portable pass gets inf - inf = NaN and reports it; so must this
    // one, whose fused scale * s - max would give -inf and a quietly uniform row.
    finite = finite && std::isfinite(row_max);
    const __m512 shift = _mm512_set1_ps(row_max);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t i = 0; i < k; i += 16) {
      const __mmask16 m = lanes(k - i);
      const __m512 ex = exp16(_mm512_fmsub_ps(load_bf16(row + i, m), scale, shift));
      _mm512_mask_storeu_ps(e + i, m, ex);
      sum = _mm512_mask_add_ps(sum, m, sum, ex);
    }
    const float total = _mm512_reduce_add_ps(sum);
    finite = finite && std::isfinite(total);
    // y = e / sum, rounded to bf16; the max over cells takes the unrounded value (first cell on ties).
    const __m512 inverse = _mm512_set1_ps(1.0f / total);
    const __m512i this_cell = _mm512_set1_epi32(static_cast<int32_t>(cell));
    for (int64_t i = 0; i < k; i += 16) {
      const __mmask16 m = lanes(k - i);
      const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, e + i), inverse);
      store_bf16(row + i, m, v);
      const __mmask16 better = _mm512_mask_cmp_ps_mask(m, v, _mm512_maskz_loadu_ps(m, best + i), _CMP_GT_OQ);
      _mm512_mask_storeu_ps(best + i, better, v);
      _mm512_mask_storeu_epi32(cell_of_best + i, better, this_cell);
    }
  }
  return finite;
}

PQ_AVX512_BF16 void softmax_rows_backward(uint16_t* y, const float* row_scale, int64_t cells, int64_t k,
                                          const float* w, const float* s_cell, const int32_t* holds,
                                          const int32_t* cell_of_best) {
  for (int64_t cell = 0; cell < cells; ++cell) {
    uint16_t* row = y + cell * k;
    if (holds[cell] == 0) {  // no max here: dS is (0 - y * 0) * scale = 0 for the finite y of the forward
      std::memset(row, 0, static_cast<size_t>(k) * sizeof(uint16_t));
      continue;
    }
    const __m512 scale = _mm512_set1_ps(row_scale ? row_scale[cell] : 1.0f);
    const __m512 s = _mm512_set1_ps(s_cell[cell]);
    const __m512i this_cell = _mm512_set1_epi32(static_cast<int32_t>(cell));
    for (int64_t i = 0; i < k; i += 16) {
      const __mmask16 m = lanes(k - i);
      const __mmask16 here = _mm512_mask_cmpeq_epi32_mask(m, _mm512_maskz_loadu_epi32(m, cell_of_best + i), this_cell);
      const __m512 sparse = _mm512_maskz_loadu_ps(here, w + i);
      store_bf16(row + i, m, _mm512_mul_ps(_mm512_fnmadd_ps(load_bf16(row + i, m), s, sparse), scale));
    }
  }
}

}  // namespace protoquant::heads::avx512

#else  // not x86-64: the portable loops only

namespace protoquant::heads::avx512 {
bool supported() { return false; }
bool enabled() { return false; }
void set_enabled(bool) {}
bool softmax_rows_and_max(uint16_t*, const float*, int64_t, int64_t, float*, int32_t*, float*) { return false; }
void softmax_rows_backward(uint16_t*, const float*, int64_t, int64_t, const float*, const float*, const int32_t*,
                           const int32_t*) {}
}  // namespace protoquant::heads::avx512

#endif
