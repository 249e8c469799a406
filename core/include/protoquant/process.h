// Process-wide settings the CLI applies once at start-up.
#pragma once

namespace protoquant {

// Keeps freed tensor memory in the process instead of returning it to the kernel after every
// batch. With glibc's defaults each large activation is mmap'ed, faulted in page by page and
// unmapped again; measured here, that made feature extraction 3x slower (mostly system time).
void tune_allocator();

}  // namespace protoquant
