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
  int64_t candidates = 4;      // bf16: candidates re-ranked in fp32 per vector
  int64_t repeat = 3;
  int64_t threads = 0;
  int64_t train_iterations = 0;  // > 0: also k-means-train the codebook and report its MSE
  std::string data_dir;          // vectors.f32 (N x D) and codebook.f32 from bench/quantizer_vs_faiss.py
  std::string codes_out;         // write the N x codebooks int64 codes here (raw)
};

struct HeadBenchOptions {
  std::string head = "protoquant";  // a registered head
  int64_t batch = 64;
  int64_t dim = 768;
  int64_t grid = 7;
  int64_t prototypes = 2048;
  int64_t classes = 200;
  std::string dtype = "fp32";  // the head's compute dtype: fp32 or bf16
  int64_t steps = 10;
  int64_t warmup = 3;
  int64_t threads = 0;
  std::string reference;       // the eager-PyTorch script to run beside it; empty: none
};

// Times full stage-3 training steps (forward, loss, backward, Adam) and prints steps_per_s,
// then runs the reference script with the same sizes and prints its rate and the ratio.
absl::Status bench_head(Registry& registry, const HeadBenchOptions& options);

// Times Quantizer::encode over all vectors (best of `repeat`) and prints assignments_per_s.
absl::Status bench_quantizer(Registry& registry, const QuantizerBenchOptions& options);

}  // namespace protoquant
