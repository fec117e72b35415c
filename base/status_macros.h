// Status plumbing: Debian's Abseil ships no status_macros.h, so bitserve keeps its own two macros.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define BITSERVE_CONCAT_INNER(a, b) a##b
#define BITSERVE_CONCAT(a, b) BITSERVE_CONCAT_INNER(a, b)

// Returns from the enclosing function when `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                            \
  do {                                                   \
    ::absl::Status bitserve_status_ = (expr);            \
    if (!bitserve_status_.ok()) return bitserve_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, F());` declares/assigns x from a StatusOr or returns its error.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  BITSERVE_ASSIGN_OR_RETURN_IMPL(BITSERVE_CONCAT(bitserve_statusor_, __LINE__), lhs, rexpr)
#define BITSERVE_ASSIGN_OR_RETURN_IMPL(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                   \
  if (!tmp.ok()) return std::move(tmp).status();        \
  lhs = std::move(tmp).value()
