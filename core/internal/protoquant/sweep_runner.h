// `protoquant run MANIFEST`: a single run or a whole sweep. It expands the manifest into its
// members (sweep.h), prints the plan (per member, which stages are reused from the artifact
// store and which are computed), runs the members in order or --jobs at a time in child
// processes, and records each finished run as one row of the results store (results_store.h).
//
// Where things go, from one base folder: --out for a sweep (members in --out/<member name>/),
// the folder above --out for a single run, else experiment.output. The artifact store is
// <base>/store (unless --store or experiment.store say else) and the results store
// <base>/results.db (unless --db), so every run under one output folder shares both.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <absl/status/status.h>

#include "protoquant/experiment_run.h"
#include "protoquant/registry.h"

namespace protoquant {

struct ManifestRunOptions {
  std::filesystem::path out_dir;     // --out
  bool resume = false;               // --resume (a single run's folder must exist)
  RunSettings settings;              // --store, --force
  std::filesystem::path db;          // --db
  int jobs = 1;                      // --jobs: members side by side, jobs x threads <= cores
  bool dry_run = false;              // --dry-run: print the plan only
  int member = -1;                   // internal (a --jobs child): run this member only, into out_dir
  std::vector<std::string> plugins;  // the CLI's --plugin libraries, passed on to --jobs children
};

absl::Status run_manifest(const std::filesystem::path& manifest, const std::vector<std::string>& overrides,
                          Registry& registry, const ManifestRunOptions& options);

}  // namespace protoquant
