#pragma once

#include "dcp/value.h"

namespace dcp {
// A copy of `v` in which every Stateful object (at any depth) is replaced by
// its state_dict(), itself resolved. Tensors are shared, not copied.
Value resolve_stateful(const Value& v);
}  // namespace dcp
