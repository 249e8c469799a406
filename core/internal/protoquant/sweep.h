// Sweeps: one manifest expanded into many single runs by its [sweep] table, for ablations.
//
//   [sweep]
//   seeds = [0, 1, 2]                          # experiment.seed, the innermost dimension
//   [sweep.grid]                               # a cartesian product, the first key outermost
//   "quantizer.type" = ["vq", "pq"]
//   [sweep.zip]                                # parallel lists: member i takes element i of each
//   "quantizer.codes" = [64, 256]
//   "head.temperature" = [0.05, 0.1]
//
// expands into grid x zip x seeds members (here 2 x 2 x 3 = 12), each validated as a plain
// manifest before anything runs. Precedence: the manifest (and what it extends) < the member's
// sweep assignment < --set; a --set of a swept key takes that key out of the sweep.
// docs/MANIFEST.md has the details.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <absl/status/statusor.h>

#include <nlohmann/json.hpp>

#include "protoquant/experiment_spec.h"
#include "protoquant/registry.h"

namespace protoquant {

struct SweepMember {
  int index = 0;              // 0-based, in expansion order
  std::string name;           // the experiment name plus the assignment; also the spec's experiment.name
  nlohmann::json assignment;  // only the swept keys: {"quantizer.type": "vq", "experiment.seed": 0}
  ExperimentSpec spec;        // validated and resolved: a plain single-run manifest
};

// Every member of the sweep `manifest` defines, all validated, or an error listing the problems
// of every invalid member, one per line, each prefixed "member N (key=value, ...): " (problems
// shared by all members, such as a typo in the manifest itself, are listed once, unprefixed).
// A manifest without [sweep] gives exactly one member: empty assignment, the experiment's name.
// overrides: "dotted.key=value" as for load_experiment(), applied to every member.
absl::StatusOr<std::vector<SweepMember>> load_sweep(const std::filesystem::path& manifest,
                                                   const std::vector<std::string>& overrides, Registry& registry);

}  // namespace protoquant
