// What CPU a figure was measured on. The same command runs at very different speeds on the kinds
// of machine this project meets (an AMD EPYC with AVX-512 BF16, an Intel Xeon with AMX), so every
// benchmark prints this line and every run records it.
#pragma once

#include <string>
#include <vector>

namespace protoquant {

struct CpuInfo {
  std::string model;                  // /proc/cpuinfo's "model name", e.g. "AMD EPYC 9B14"
  int logical_cpus = 0;               // hardware threads this process may run on
  std::vector<std::string> features;  // the matrix-relevant ones present: avx2, avx512f, avx512_bf16, amx_bf16, ...

  // One line: "AMD EPYC 9B14, 2 threads, AVX2 AVX-512 AVX-512-BF16" ("no AVX-512" when absent).
  std::string describe() const;
};

// Read once from /proc/cpuinfo (model, flags) and the process's CPU affinity.
const CpuInfo& cpu_info();

}  // namespace protoquant
