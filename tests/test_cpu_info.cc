#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <thread>

#include "protoquant/cpu_info.h"

namespace protoquant {
namespace {

// The first "flags" line of /proc/cpuinfo, read here independently of cpu_info().
std::string first_flags_line() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) == 0) return " " + line.substr(line.find(':') + 1) + " ";
  }
  return "";
}

TEST(CpuInfo, NamesTheModelThreadsAndMatrixFeaturesOfThisMachine) {
  const CpuInfo& info = cpu_info();
  const std::string line = info.describe();
  EXPECT_FALSE(info.model.empty());
  EXPECT_EQ(line.rfind(info.model + ", ", 0), 0u) << line;
  EXPECT_GE(info.logical_cpus, 1);
  EXPECT_LE(info.logical_cpus, static_cast<int>(std::thread::hardware_concurrency()));
  EXPECT_NE(line.find(std::to_string(info.logical_cpus) + " threads"), std::string::npos) << line;
  const std::string flags = first_flags_line();
  ASSERT_FALSE(flags.empty());
  const bool avx512 = flags.find(" avx512f ") != std::string::npos;
  const bool amx = flags.find(" amx_bf16 ") != std::string::npos;
  const auto has = [&](const char* feature) {
    return std::find(info.features.begin(), info.features.end(), feature) != info.features.end();
  };
  EXPECT_EQ(has("avx512f"), avx512);
  EXPECT_EQ(has("amx_bf16"), amx);
  EXPECT_EQ(line.find("no AVX-512") != std::string::npos, !avx512) << line;
  EXPECT_EQ(line.find("AMX-BF16") != std::string::npos, amx) << line;
}

}  // namespace
}  // namespace protoquant
