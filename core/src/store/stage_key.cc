#include "protoquant/stage_key.h"

#include <map>
#include <mutex>

#ifndef BOOST_DLL_USE_STD_FS
#define BOOST_DLL_USE_STD_FS
#endif
#include <boost/dll/runtime_symbol_info.hpp>
#include <fmt/format.h>

#include "protoquant/digest.h"
#include "protoquant/status.h"

namespace protoquant {
namespace fs = std::filesystem;

StageKey make_stage_key(const std::string& stage, nlohmann::json inputs) {
  inputs["stage"] = stage;
  inputs["format"] = kStageFormat;
  StageKey key;
  key.key = sha256_hex(inputs.dump());
  key.inputs = std::move(inputs);
  return key;
}

absl::StatusOr<nlohmann::json> library_identity(const fs::path& library) {
  static std::mutex mutex;
  static std::map<std::pair<std::string, int64_t>, nlohmann::json> known;
  std::error_code ec;
  const fs::path path = fs::weakly_canonical(library, ec);
  const auto modified = fs::last_write_time(path, ec).time_since_epoch().count();
  if (ec) return absl::NotFoundError(fmt::format("{}: library not found", library.string()));
  std::lock_guard<std::mutex> lock(mutex);
  auto [it, inserted] = known.try_emplace({path.string(), static_cast<int64_t>(modified)});
  if (inserted) {
    auto digest = sha256_file(path);
    if (!digest.ok()) {
      known.erase(it);
      return digest.status();
    }
    it->second = {{"library", path.filename().string()}, {"sha256", *digest}};
  }
  return it->second;
}

absl::StatusOr<nlohmann::json> core_identity() {
  return library_identity(boost::dll::this_line_location());
}

}  // namespace protoquant
