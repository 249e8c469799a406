// A validated, fully resolved experiment: what `protoquant run` executes. Produced only by the
// manifest loader (core/src/manifest/manifest.cc), so holding one means every value passed its schema.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "protoquant/params.h"

namespace protoquant {

struct ComponentSpec {
  std::string kind;  // "backbone", ...
  std::string type;  // the registered name
  Params params;
};

struct ExperimentSpec {
  std::filesystem::path manifest_path;
  std::filesystem::path base_dir;  // the manifest's folder
  Params experiment;               // [experiment]
  ComponentSpec dataset, backbone, quantizer, head;
  std::map<std::string, Params> stages;  // [stages.blackbox], [stages.codebook], [stages.head]
  std::vector<ComponentSpec> metrics;    // [[metrics]]
  Params report;                         // [report]: what the run report (report.html) shows
  std::vector<std::string> plugins;      // extra plugin libraries, absolute paths
  nlohmann::json resolved;               // the manifest with every default filled in
};

}  // namespace protoquant
