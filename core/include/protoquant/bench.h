// `protoquant bench ...`: micro-benchmarks that print machine-readable `name: value` lines, so
// the scripts in bench/ can set them beside a reference implementation measured in the same run.
#pragma once

#include <string>

#include <absl/status/status.h>

#include "protoquant/registry.h"

namespace protoquant {

struct QuantizerBenchOptions {
  std::string kind = "vq";  // a registered quantizer
  int64_t vectors = 50000;
  int64_t dim = 768;
  int64_t codes = 2048;
  int64_t subspaces = 8;
  std::string dtype = "fp32";  // fp32: exact search; bf16: bf16 candidates + fp32 re-rank
  std::string metric = "euclidean";
  int64_t repeat = 3;
  int64_t threads = 0;
  int64_t train_iterations = 0;  // > 0: also k-means-train the codebook and report its MSE
  std::string data_dir;          // vectors.f32 (N x D) and codebook.f32 from bench/quantizer_vs_faiss.py
  std::string codes_out;         // write the N x codebooks int64 codes here (raw)
};

// Times Quantizer::encode over all vectors (best of `repeat`) and prints assignments_per_s.
absl::Status bench_quantizer(Registry& registry, const QuantizerBenchOptions& options);

}  // namespace protoquant
