// `protoquant bench ...`: micro-benchmarks that print machine-readable `name: value` lines, so
// the scripts in bench/ can set them beside a reference implementation measured in the same run.
#pragma once

#include <optional>
#include <string>

#include <absl/status/status.h>
#include <absl/status/statusor.h>

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

struct BackboneBenchOptions {
  std::string arch = "small_cnn";  // a registered backbone
  std::string mode = "extract";    // extract: frozen features; train: stage 0's step
  std::string dtype = "fp32";      // fp32, or bf16 (autocast, as experiment.backbone_precision)
  int64_t batch = 0;               // 0: 128 for small_cnn, 32 otherwise
  int64_t image_size = 0;          // 0: 28 for small_cnn (1 channel), 224 otherwise (3 channels)
  int64_t threads = 0;
  double seconds = 10.0;           // timed for at least this long
  std::string reference;           // the eager-PyTorch script to run beside it; empty: none
};

// Runs an eager-PyTorch reference script and returns the number on its `<value>: X` line; nullopt
// (said on stdout) when /usr/bin/python3 has no PyTorch or the script reports that eager PyTorch
// cannot do the work (`reference_error: ...`). Its other lines are echoed.
absl::StatusOr<std::optional<double>> run_reference(const std::string& command, const std::string& value);

// Times the backbone's extraction (eval, inference mode, batch norm folded as a run extracts) or stage-0 training step (forward, fp32
// loss, backward, Adam) and prints images_per_s and the effective GFLOP/s, FLOPs counted by the
// profiler over one forward pass (a training step counts three: forward and two backward
// products), then the reference's images_per_s and the ratio.
absl::Status bench_backbone(Registry& registry, const BackboneBenchOptions& options);

// Times full stage-3 training steps (forward, loss, backward, Adam) and prints steps_per_s,
// then runs the reference script with the same sizes and prints its rate and the ratio.
absl::Status bench_head(Registry& registry, const HeadBenchOptions& options);

// Times Quantizer::encode over all vectors (best of `repeat`) and prints assignments_per_s.
absl::Status bench_quantizer(Registry& registry, const QuantizerBenchOptions& options);

}  // namespace protoquant
