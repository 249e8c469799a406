// The conformance suite: the checks every component of a kind must pass, the same ones the
// built-in plugins pass. `protoquant check-plugin LIB.so` runs them on every component a library
// registers; a plugin's own tests can call them too (plugins/template does).
//
// Each kind is built from its schema's defaults with a small, coherent BuildContext (4 classes,
// 3 x 32 x 32 images, 16 feature channels, 8 prototypes) and checked for:
//   backbone   shapes and dtypes of features() and classify(), channels(), a sane geometry(),
//              determinism under a seed, a save/load round trip, gradients into its parameters
//   quantizer  shapes, dtypes and index range of quantize(), codebook() layout, determinism,
//              save/load, gradients where learns_by_gradient() promises them, NaN input refused
//              (or mapped to valid codes)
//   head       logits, presence in [0, 1], similarity maps (eval), non-negative class weights,
//              determinism, save/load, gradients, a wrongly shaped input refused
//   dataset    info() coherent with its batches, labels in range, the eval transform
//              deterministic, an index out of range refused (only when the defaults build it);
//              with interventions, removing nothing re-renders the eval batch, with part maps
//   metric     needs(), and compute() before any batch: a Status, not an exception
// and, for every kind, that building with a bad parameter value is an error, not a crash, and
// that no exception escapes any call (one that does fails its check with its message).
#pragma once

#include <string>
#include <vector>

#include "protoquant/registry.h"

namespace protoquant {

struct ConformanceCheck {
  std::string kind;       // "quantizer", ...
  std::string component;  // its registered name
  std::string check;      // e.g. "save/load round trip"
  enum class Outcome { kPassed, kFailed, kSkipped } outcome = Outcome::kPassed;
  std::string detail;     // why it failed or was skipped

  bool failed() const { return outcome == Outcome::kFailed; }
  // "PASS quantizer vq: save/load round trip" or "FAIL ...: <detail>".
  std::string line() const;
};

// Every check of `kind`'s suite on the registered component `name`.
std::vector<ConformanceCheck> check_component(Registry& registry, const std::string& kind, const std::string& name);

// Every component that `library` (a path as the registry recorded it) registered, by kind.
std::vector<ConformanceCheck> check_library(Registry& registry, const std::string& library);

}  // namespace protoquant
