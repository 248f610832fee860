// Checksums the default stager takes while it copies (dcp/async_save.h):
// the XXH3-64 of each staging buffer it copied whole, kept from the end of
// its stage() until its release(), when the buffer may change. The
// file-system writer looks an item's memory up here before hashing it, so a
// background save does not read its 2 GiB a second time on the trainer's
// cores.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dcp {
namespace internal {

// True, with `*checksum`, when [data, data + n) is exactly a staged buffer.
bool staged_checksum(const void* data, size_t n, uint64_t* checksum);

}  // namespace internal
}  // namespace dcp
