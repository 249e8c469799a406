#include "protoquant/cpu_info.h"

#include <sched.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

namespace protoquant {
namespace {

// The flags that decide which GEMM and convolution kernels oneDNN and OpenBLAS pick, in the
// order they are printed, with the name people use for each.
struct Feature {
  const char* flag;
  const char* label;
};
constexpr Feature kFeatures[] = {{"avx2", "AVX2"},           {"avx512f", "AVX-512"},
                                 {"avx512_bf16", "AVX-512-BF16"}, {"avx512_fp16", "AVX-512-FP16"},
                                 {"amx_bf16", "AMX-BF16"},   {"amx_int8", "AMX-INT8"}};

CpuInfo read_cpu_info() {
  CpuInfo info;
  std::ifstream in("/proc/cpuinfo");
  std::string line, flags;
  while (std::getline(in, line) && (info.model.empty() || flags.empty())) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    key.erase(key.find_last_not_of(" \t") + 1);
    const std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    if (key == "model name" && info.model.empty()) info.model = value;
    if (key == "flags" && flags.empty()) flags = " " + value + " ";
  }
  if (info.model.empty()) info.model = "unknown CPU";
  for (const auto& feature : kFeatures) {
    if (flags.find(fmt::format(" {} ", feature.flag)) != std::string::npos) info.features.push_back(feature.flag);
  }
  cpu_set_t set;
  info.logical_cpus = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set)
                                                                    : static_cast<int>(std::thread::hardware_concurrency());
  return info;
}

}  // namespace

std::string CpuInfo::describe() const {
  std::string line = fmt::format("{}, {} threads", model, logical_cpus);
  bool avx512 = false;
  for (const auto& feature : kFeatures) {
    if (std::find(features.begin(), features.end(), feature.flag) == features.end()) continue;
    line += fmt::format(" {}", feature.label);
    avx512 = avx512 || std::string(feature.flag) == "avx512f";
  }
  if (!avx512) line += ", no AVX-512";
  return line;
}

const CpuInfo& cpu_info() {
  static const CpuInfo info = read_cpu_info();
  return info;
}

}  // namespace protoquant
