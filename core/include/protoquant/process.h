// Process-wide settings: the ones the CLI applies once at start-up, and the thread count rule.
#pragma once

#include <cstdint>

namespace protoquant {

// A thread count from a manifest or a command line: `requested` if positive, else the hardware
// threads shared among this machine's processes of a data-parallel run (LOCAL_WORLD_SIZE; at
// least 1).
int64_t resolve_threads(int64_t requested);

// Keeps freed tensor memory in the process instead of returning it to the kernel after every
// batch. With glibc's defaults each large activation is mmap'ed, faulted in page by page and
// unmapped again; measured here, that made feature extraction 3x slower (mostly system time).
void tune_allocator();

}  // namespace protoquant
