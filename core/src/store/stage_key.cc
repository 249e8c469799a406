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
  // Once per path and process: the identity of the code this process loaded. A library rebuilt
  // while a long sweep runs must not change the keys of its later members (they still run the
  // code loaded at the start, and would compute every stage again under new keys).
  static std::mutex mutex;
  static std::map<std::string, nlohmann::json> known;
  std::error_code ec;
  const fs::path path = fs::weakly_canonical(library, ec);
  if (ec || !fs::exists(path, ec)) return absl::NotFoundError(fmt::format("{}: library not found", library.string()));
  std::lock_guard<std::mutex> lock(mutex);
  auto [it, inserted] = known.try_emplace(path.string());
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
