// The backbone's arithmetic (experiment.backbone_precision): fp32, or bf16 under autocast.
//
// bf16 is mixed precision as PyTorch's autocast does it: convolutions and matrix products run in
// bf16 (oneDNN's AVX512-BF16 / AMX kernels on CPU), reductions and normalisation statistics in
// fp32, the weights stay fp32 (the optimizer's master copy) and the loss is computed in fp32. It
// covers the backbone wherever it runs: stage 0's training and validation, feature extraction,
// the metrics' and explanations' passes over images. On CUDA it is CUDA autocast in bf16.
#pragma once

#include <string>

#include <absl/status/statusor.h>
#include <torch/types.h>

#include "protoquant/cpu_info.h"

namespace protoquant {

enum class Precision { kFp32, kBf16 };

std::string precision_name(Precision precision);

// "fp32" or "bf16", checked against this machine: bf16 on a CPU needs AVX512-BF16 or AMX-BF16
// (without them oneDNN emulates bf16, slower than fp32); the error names the flags it read.
// "auto": bf16 on a CPU that has them, else fp32 (fp32 on CUDA: name bf16 there).
absl::StatusOr<Precision> parse_backbone_precision(const std::string& name, torch::Device device);
absl::Status check_bf16_cpu(const CpuInfo& cpu);

// For its lifetime, this thread's operations run under autocast at `precision` (nothing at fp32);
// restores what was set before, so scopes nest.
class AutocastScope {
 public:
  AutocastScope(Precision precision, torch::Device device);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false;
  bool cuda_ = false;
  bool was_enabled_ = false;
  at::ScalarType previous_dtype_ = at::kBFloat16;
};

}  // namespace protoquant
