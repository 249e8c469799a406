// The presence node's row passes for bf16 similarities, written with AVX-512 intrinsics (F, BW,
// VL, DQ, BF16: AMD Zen 4, Intel Cooper Lake, Sapphire Rapids and later) and picked at run time
// where the CPU has them.
//
// They do what the portable loops in presence_cpu.cc do, which stay the reference (the tests
// compare the two) and the path on every other CPU. The portable loops are compiled for AVX-512 as
// well, but GCC cannot express three things that made them cost twice these: the one-instruction
// fp32 -> bf16 rounding (vcvtneps2bf16; in portable code, six integer operations), exp's 2^n by
// vscalefps (no exponent arithmetic), and the running max over cells as masked stores without
// branches (GCC guards them with a mispredicted "any lane?" branch). Results agree with the
// portable loops to rounding, not bit for bit (e.g. vcvtneps2bf16 flushes denormals to zero), so
// a run resumed on a CPU of the other kind continues on slightly different numbers.
#pragma once

#include <cstdint>

namespace protoquant::heads::avx512 {

// Whether this CPU runs the functions below (and this build has them: x86-64 with GCC 12+).
bool supported();

// Whether presence_cpu.cc uses them: supported() unless turned off with set_enabled(false), which
// the tests use to check both paths on one machine.
bool enabled();
void set_enabled(bool on);

// One image: its `cells` rows of k bf16 similarities in y, each overwritten with
// softmax(row_scale[cell] * s) (row_scale null: 1), and per prototype the max over the cells
// (best, fp32) with the first cell that holds it (cell_of_best). `scratch` holds k floats.
// Returns false if a row's softmax sum is not finite (NaN or infinite similarities).
bool softmax_rows_and_max(uint16_t* y, const float* row_scale, int64_t cells, int64_t k, float* best,
                          int32_t* cell_of_best, float* scratch);

// Its backward for the same image: y[cell, i] becomes
//   row_scale[cell] * ([cell_of_best[i] == cell] w[i] - y[cell, i] s_cell[cell]),
// a row of zeros where no prototype has its max in that cell (holds[cell] == 0).
void softmax_rows_backward(uint16_t* y, const float* row_scale, int64_t cells, int64_t k, const float* w,
                           const float* s_cell, const int32_t* holds, const int32_t* cell_of_best);

}  // namespace protoquant::heads::avx512
