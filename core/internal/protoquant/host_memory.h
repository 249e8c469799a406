// Large host tensors on transparent huge pages.
//
// The head and codebook stages gather a batch of random rows at a time from the feature maps of a
// whole split. With 4 KiB pages each row (25 KB on the quickstart) spans seven TLB entries, and on
// virtual machines (nested paging) the page walks cost as much as the copy: a batch came out
// twice as fast from memory on 2 MiB pages as from a file mapping or ordinary heap memory: a
// cached bf16 head epoch on the quickstart went from about 1.8 s to 1.45 s. Linux hands anonymous memory huge pages only where asked
// (transparent_hugepage=madvise, the usual default), so large feature stores ask.
#pragma once

#include <cstdint>

#include <torch/types.h>

namespace protoquant {

// An uninitialised contiguous CPU tensor; from 32 MiB up its memory is 2 MiB-aligned and advised
// for huge pages (on Linux; elsewhere, or below that size, torch::empty).
torch::Tensor empty_on_huge_pages(at::IntArrayRef sizes, torch::ScalarType dtype);

// Bytes of memory the system can still give without swapping (MemAvailable), or 0 if unknown.
uint64_t available_memory_bytes();

}  // namespace protoquant
