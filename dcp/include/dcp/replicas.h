// What save() does when ranks hold different values under one key.
//
// A tensor (or a chunk of a sharded tensor, or a plain value) that several
// ranks save under the same key is written once (dedup). Before the
// checkpoint commits, every holder's copy is compared by checksum with the
// written one: copies that differ mean the ranks disagree about the state,
// and keeping one rank's values silently would hide that.
#pragma once

#include <cstdint>
#include <string>

#include "dcp/export.h"

namespace dcp {

enum class ReplicaCheck : uint8_t {
  kError,  // default: the save fails, naming the key and the ranks that differ
  kWarn,   // logged (key and ranks); the written copy is committed
  kOff,    // not compared (no checksum of the dropped copies is computed)
};

// "error", "warn", "off".
DCP_CORE_EXPORT const char* replica_check_name(ReplicaCheck check);
// The inverse; throws InvalidArgumentError naming the accepted names.
DCP_CORE_EXPORT ReplicaCheck replica_check_from_name(const std::string& name);

}  // namespace dcp
