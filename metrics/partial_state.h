// The helpers of Metric::partial_state / load_partial_state (metric.h): a metric's scalar
// counters travel as one fp64 tensor (exact for counts below 2^53).
#pragma once

#include <initializer_list>
#include <vector>

#include <absl/status/status.h>
#include <fmt/format.h>
#include <torch/torch.h>

namespace protoquant::metrics {

inline torch::Tensor scalar_state(std::initializer_list<double> values) {
  return torch::tensor(std::vector<double>(values), torch::kFloat64);
}

// OK when `state` holds `count` defined tensors, else the one line that names the metric.
inline absl::Status check_state(const std::vector<torch::Tensor>& state, size_t count, const char* metric) {
  bool ok = state.size() == count;
  for (const auto& t : state) ok = ok && t.defined();
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      fmt::format("{}: a partial state of {} tensor(s) where {} were expected", metric, state.size(), count));
}

}  // namespace protoquant::metrics
