// PQ_CPU_CLONES marks a hot loop function to be compiled three times, for AVX-512 (x86-64-v4),
// AVX2 + FMA (x86-64-v3) and baseline x86-64, with the best one for the running CPU picked when
// the library is loaded (GCC's target_clones). The Debian build must run on any amd64 machine,
// and plain -O3 code would then never use the wide vector units. Elsewhere it expands to nothing.
// Keep such functions non-template, with their loops written for the vectoriser (`omp simd`
// reductions need the file built with -fopenmp: protoquant_openmp_source in CMake).
#pragma once

// ("arch=x86-64-v3/v4" clones need GCC 12; older compilers get the plain build.)
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define PQ_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PQ_CPU_CLONES
#endif
