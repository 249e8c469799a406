#include "protoquant/process.h"

#include <malloc.h>

namespace protoquant {

void tune_allocator() {
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);          // glibc's maximum: big blocks come from the heap
  mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024);        // keep up to 1 GiB of free heap
  mallopt(M_TOP_PAD, 256 * 1024 * 1024);                 // grow the heap in large steps
}

}  // namespace protoquant
