#include "protoquant/precision.h"

#include <algorithm>

#include <ATen/autocast_mode.h>
#include <absl/strings/str_join.h>
#include <fmt/format.h>

namespace protoquant {

std::string precision_name(Precision precision) { return precision == Precision::kBf16 ? "bf16" : "fp32"; }

absl::Status check_bf16_cpu(const CpuInfo& cpu) {
  const auto has = [&](const char* flag) {
    return std::find(cpu.features.begin(), cpu.features.end(), flag) != cpu.features.end();
  };
  if (has("avx512_bf16") || has("amx_bf16")) return absl::OkStatus();
  return absl::FailedPreconditionError(fmt::format(
      "experiment.backbone_precision = \"bf16\": this CPU ({}) has neither avx512_bf16 nor amx_bf16 among its "
      "/proc/cpuinfo flags (it has: {}), so bf16 would be emulated, slower than fp32; use \"fp32\"",
      cpu.model, cpu.features.empty() ? std::string("none of avx2, avx512f") : absl::StrJoin(cpu.features, " ")));
}

absl::StatusOr<Precision> parse_backbone_precision(const std::string& name, torch::Device device) {
  if (name == "fp32") return Precision::kFp32;
  if (name == "auto") {
    // A GPU's bf16 support is not checked here (pre-Ampere cards emulate it): name bf16 there.
    return device.is_cpu() && check_bf16_cpu(cpu_info()).ok() ? Precision::kBf16 : Precision::kFp32;
  }
  if (name != "bf16") {
    return absl::InvalidArgumentError(
        fmt::format("experiment.backbone_precision = \"{}\": expected \"fp32\", \"bf16\" or \"auto\"", name));
  }
  if (device.is_cpu()) {
    if (auto status = check_bf16_cpu(cpu_info()); !status.ok()) return status;
  }
  return Precision::kBf16;
}

AutocastScope::AutocastScope(Precision precision, torch::Device device) {
  if (precision == Precision::kFp32) return;
  active_ = true;
  cuda_ = device.is_cuda();
  if (cuda_) {
    was_enabled_ = at::autocast::is_enabled();
    previous_dtype_ = at::autocast::get_autocast_gpu_dtype();
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(true);
  } else {
    was_enabled_ = at::autocast::is_cpu_enabled();
    previous_dtype_ = at::autocast::get_autocast_cpu_dtype();
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::set_cpu_enabled(true);
  }
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  // The outermost scope drops the bf16 copies of the weights that autocast cached.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  if (cuda_) {
    at::autocast::set_enabled(was_enabled_);
    at::autocast::set_autocast_gpu_dtype(previous_dtype_);
  } else {
    at::autocast::set_cpu_enabled(was_enabled_);
    at::autocast::set_autocast_cpu_dtype(previous_dtype_);
  }
}

}  // namespace protoquant
