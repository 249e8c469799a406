// Error handling shared by the core and every plugin: absl::Status everywhere, and a guard that
// turns exceptions (c10::Error from LibTorch, std::exception) into a Status at an API edge, so
// that no exception crosses a plugin boundary.
#pragma once

#include <exception>
#include <string>
#include <utility>

#include <absl/status/status.h>
#include <absl/status/statusor.h>
#include <c10/util/Exception.h>
#include <fmt/format.h>

#define PQ_CONCAT_INNER(a, b) a##b
#define PQ_CONCAT(a, b) PQ_CONCAT_INNER(a, b)

#define PQ_RETURN_IF_ERROR(expr)                    \
  do {                                              \
    ::absl::Status pq_status_ = (expr);             \
    if (!pq_status_.ok()) return pq_status_;        \
  } while (false)

#define PQ_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return std::move(tmp).status(); \
  lhs = std::move(tmp).value()

#define PQ_ASSIGN_OR_RETURN(lhs, expr) \
  PQ_ASSIGN_OR_RETURN_IMPL(PQ_CONCAT(pq_statusor_, __LINE__), lhs, expr)

namespace protoquant {

// The first line of a LibTorch error message (the rest is a C++ backtrace users do not need).
inline std::string first_line(const std::string& text) {
  const auto end = text.find('\n');
  return end == std::string::npos ? text : text.substr(0, end);
}

// Runs `fn` (returning absl::Status or absl::StatusOr<T>) and converts any exception into an
// Internal/InvalidArgument status prefixed with `context`.
template <class Fn>
auto guard(const std::string& context, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(fmt::format("{}: {}", context, first_line(e.what_without_backtrace())));
  } catch (const std::exception& e) {
    return absl::InternalError(fmt::format("{}: {}", context, first_line(e.what())));
  }
}

// Prefixes a status message with context ("while loading X: ...") keeping its code.
inline absl::Status annotate(const absl::Status& status, const std::string& context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), fmt::format("{}: {}", context, std::string(status.message())));
}

}  // namespace protoquant
