#include "protoquant/process.h"

#include <malloc.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

namespace protoquant {

int64_t resolve_threads(int64_t requested) {
  if (requested > 0) return requested;
  // The processes of a data-parallel run on one machine share its cores.
  int64_t local_processes = 1;
  if (const char* value = std::getenv("LOCAL_WORLD_SIZE"); value != nullptr) {
    local_processes = std::max<int64_t>(1, std::atoll(value));
  }
  return std::max<int64_t>(1, std::thread::hardware_concurrency() / local_processes);
}

void tune_allocator() {
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);          // glibc's maximum: big blocks come from the heap
  mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024);        // keep up to 1 GiB of free heap
  mallopt(M_TOP_PAD, 256 * 1024 * 1024);                 // grow the heap in large steps
}

}  // namespace protoquant
