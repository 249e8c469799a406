// Shared pieces of the hand-written CPU loops (heads/presence_cpu.cc, quantizers/rerank_cpu.cc).
//
// PQ_CPU_CLONES marks a hot loop function to be compiled three times, for AVX-512 (x86-64-v4),
// AVX2 + FMA (x86-64-v3) and baseline x86-64, with the best one for the running CPU picked when
// the library is loaded (GCC's target_clones). The Debian build must run on any amd64 machine,
// and plain -O3 code would then never use the wide vector units. Elsewhere it expands to nothing.
// Keep such functions non-template (overloads are fine), with their loops written for the
// vectoriser (`omp simd` reductions need the file built with -fopenmp: protoquant_openmp_source
// in CMake).
#pragma once

#include <cstdint>

// ("arch=x86-64-v3/v4" clones need GCC 12; older compilers get the plain build.)
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define PQ_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PQ_CPU_CLONES
#endif

namespace protoquant::cpu {

// bf16 as its raw bits (at::BFloat16's conversions do not vectorise).
using bf16_bits = uint16_t;

inline float widen(bf16_bits v) { return __builtin_bit_cast(float, uint32_t{v} << 16); }

// Round to nearest even; NaN stays NaN (a plain rounding could carry some NaNs into infinity).
inline bf16_bits narrow(float v) {
  const uint32_t bits = __builtin_bit_cast(uint32_t, v);
  const uint32_t rounded = bits + 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<bf16_bits>(((bits & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC00000u : rounded) >> 16);
}

// The same rounding for values known to be finite (or checked afterwards): without the NaN test
// it vectorises to a third of the instructions, which was half the cost of the softmax pass.
inline bf16_bits narrow_finite(float v) {
  const uint32_t bits = __builtin_bit_cast(uint32_t, v);
  return static_cast<bf16_bits>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

}  // namespace protoquant::cpu
