#include "protoquant/host_memory.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace protoquant {

torch::Tensor empty_on_huge_pages(at::IntArrayRef sizes, torch::ScalarType dtype) {
  constexpr uint64_t kHugePage = uint64_t{1} << 21;
  uint64_t bytes = c10::elementSize(dtype);
  for (const int64_t s : sizes) bytes *= static_cast<uint64_t>(s);
#if defined(__linux__)
  if (bytes >= (uint64_t{32} << 20)) {
    void* memory = nullptr;
    const uint64_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    if (::posix_memalign(&memory, kHugePage, rounded) == 0) {
      ::madvise(memory, rounded, MADV_HUGEPAGE);  // advice only: without THP it stays ordinary memory
      return torch::from_blob(memory, sizes, [](void* p) { std::free(p); }, torch::TensorOptions().dtype(dtype));
    }
  }
#endif
  return torch::empty(sizes, torch::TensorOptions().dtype(dtype));
}

uint64_t available_memory_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string line;
  while (std::getline(meminfo, line)) {
    unsigned long long kib = 0;
    if (std::sscanf(line.c_str(), "MemAvailable: %llu kB", &kib) == 1) return kib * 1024;
  }
  return 0;
}

}  // namespace protoquant
