#include "run_records.h"

#include <algorithm>
#include <limits>

#include "protoquant/atomic_file.h"

namespace protoquant {

namespace fs = std::filesystem;

torch::Tensor recorded_usage(const nlohmann::json& results, int64_t prototypes) {
  if (!results.contains("codebook_counts")) return {};
  const auto counts = results["codebook_counts"].get<std::vector<int64_t>>();
  if (static_cast<int64_t>(counts.size()) != prototypes) return {};
  return torch::tensor(counts, torch::kInt64);
}

std::vector<double> recorded_purity(const fs::path& run_dir, int64_t prototypes) {
  std::error_code ec;
  std::vector<fs::path> records;
  for (const auto& entry : fs::directory_iterator(run_dir / "stages", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("metric.", 0) == 0 && entry.path().extension() == ".json") records.push_back(entry.path());
  }
  std::sort(records.begin(), records.end());  // the same instance each time
  for (const auto& file : records) {
    auto record = read_json_file(file);
    if (!record.ok() || record->value("type", "") != "purity") continue;
    const nlohmann::json* values = nullptr;
    if (record->contains("per_prototype") && (*record)["per_prototype"].contains("purity")) {
      values = &(*record)["per_prototype"]["purity"];
    }
    if (values == nullptr || !values->is_array() || static_cast<int64_t>(values->size()) != prototypes) continue;
    std::vector<double> purity;
    for (const auto& v : *values) purity.push_back(v.is_number() ? v.get<double>() : std::numeric_limits<double>::quiet_NaN());
    return purity;
  }
  return {};
}

}  // namespace protoquant
