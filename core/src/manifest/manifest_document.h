// The TOML side of manifest loading, shared by load_experiment() (manifest.cc) and load_sweep()
// (sweep.cc): reading a manifest together with the files it extends, applying --set overrides,
// and validating one merged document. Private to the core library, because TOML++ is not part of
// the public API.
//
// Source positions are what every error message is built from, and toml++ 3.3's node copy
// constructor drops them. So nodes are only ever moved between documents, never copied, and a
// caller that needs several copies of a document (one per sweep member) parses it again.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <toml++/toml.h>

#include "protoquant/experiment_spec.h"
#include "protoquant/registry.h"

namespace protoquant::manifest_detail {

// `file:line:column` of a region, naming the file the region was parsed from (a base manifest,
// or "--set key=value" for an override); just the file when the region has no position.
std::string where(const std::filesystem::path& file, const toml::source_region& region);

// Reads manifests and resolves their `extends` chains. Each file is read from disk once and its
// text kept, so parsing the same manifest again (a fresh document per sweep member) costs only
// the parse.
class ManifestReader {
 public:
  // `manifest` merged over the chain of files it extends (the nearest base first), with the
  // `extends` keys removed. Every node keeps the position in the file that set it.
  absl::StatusOr<toml::table> read(const std::filesystem::path& manifest);

  // The files of the last successful read(), the farthest base first and the manifest last, as
  // the source paths their nodes carry.
  const std::vector<std::string>& chain() const { return chain_; }

 private:
  // A file on the current extends chain, to detect cycles and to name them.
  struct Visit {
    std::filesystem::path canonical;
    std::string shown;  // as the chain spells it
  };
  absl::StatusOr<toml::table> read_with_bases(const std::filesystem::path& file, std::vector<Visit>& visiting);
  const std::string* text_of(const std::filesystem::path& file);

  std::map<std::filesystem::path, std::string> texts_;  // by canonical path
  std::vector<std::string> chain_;
};

// Merges `source` into `target` recursively: tables merge, anything else (values, arrays, arrays
// of tables) replaces whole. Nodes are moved out of `source`.
void merge(toml::table& target, toml::table& source);

// Parses one "dotted.key=value" assignment into a table whose nodes carry the source
// "--set dotted.key=value". A value that is not TOML is taken as a string.
absl::StatusOr<toml::table> parse_override(const std::string& assignment);
absl::Status apply_overrides(toml::table& root, const std::vector<std::string>& overrides);

// Every error of one document, or the complete spec when there are none.
struct ManifestValidation {
  ExperimentSpec spec;
  std::vector<std::string> errors;  // "file:line:column: message", one per entry
};
// Validates a merged document (no `extends` left; a [sweep] table is reported as an error) and
// loads the plugins it names. `manifest` is the file the user named: it provides the default
// experiment name, ExperimentSpec::base_dir, and the file of errors that have no position.
ManifestValidation validate_manifest(const std::filesystem::path& manifest, const toml::table& root,
                                     Registry& registry);

}  // namespace protoquant::manifest_detail
