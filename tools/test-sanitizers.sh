#!/usr/bin/env bash
# The test suite built with AddressSanitizer and UndefinedBehaviorSanitizer (build-sanitize/),
# as CI runs it after tools/test.sh. Any out-of-bounds access, use after free or undefined
# behaviour in the toolkit's code stops the test that hit it.
#
#   tools/test-sanitizers.sh [CTEST ARGS...]     # e.g. -R 'FuzzParsers|Checkpoint'
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${SANITIZE_BUILD_DIR:-build-sanitize}
JOBS=${JOBS:-$(nproc)}
if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPROTOQUANT_SANITIZE=ON
fi
cmake --build "$BUILD_DIR" -j "$JOBS"
# Leak checking is off: LibTorch's static registries and the plugins the loader pins for the
# process's lifetime are never freed, by design. Python (the backbone fixtures) is not
# instrumented, so the ASan runtime is not preloaded into it.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# The SDK check builds a plugin's own uninstrumented test program against this instrumented core,
# which the ASan runtime refuses to start in; tools/test.sh runs it.
# BackbonePrecision.ARunAtBf16KeysRecordsAndExtractsAtIt: under ASan's allocator, oneDNN (not
# instrumented) segfaulted once (an AMX machine, not reproduced since) in dnnl_primitive_create
# for the bf16 convolution of one 3-channel 32-px image (the report's explanations of a bf16
# run), reading an unmapped address; the plain build passes it. oneDNN's kernels are not what
# this run checks, so it also caps them below AMX (AVX-512 BF16 kernels: the same bf16 results)
# unless the caller chose a cap. See docs/RELIABILITY.md.
export ONEDNN_MAX_CPU_ISA=${ONEDNN_MAX_CPU_ISA:-AVX512_CORE_BF16}
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" \
  -E '^Sdk\.|^BackbonePrecision\.ARunAtBf16KeysRecordsAndExtractsAtIt$' "$@"
