#pragma once

#include <exception>
#include <string>

#include "dcp/checkpoint.h"
#include "dcp/value.h"

namespace dcp {
namespace internal {
// A copy of `v` in which every Stateful object (at any depth) is replaced by
// its state_dict(), itself resolved. Tensors are shared, not copied.
Value resolve_stateful(const Value& v);

// Takes part in the first round of a save that failed on this rank before
// it began (an async save whose staging threw): the failure reaches every
// rank of options.collectives as the same CheckpointError, which this throws
// too. `step` names where it failed unless `failure` is a CheckpointError.
[[noreturn]] void save_after_failure(const SaveOptions& options, const std::string& step,
                                     std::exception_ptr failure);
}  // namespace internal
}  // namespace dcp
