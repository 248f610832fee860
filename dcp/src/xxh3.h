// XXH3-64, the checksum of items and metadata: Debian's libxxhash (built for
// SSE2: ~6.5 GB/s on the development machine) or, on a CPU with AVX2, the
// same functions compiled for it from the same header (xxh3_avx2.cpp, ~10
// GB/s). The values are the same either way: XXH3 is one function whatever
// the vector width. DCP_XXH3=generic in the environment keeps the library's.
#pragma once

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t
#include <xxhash.h>

#include <cstddef>
#include <cstdint>

namespace dcp {
namespace internal {

uint64_t xxh3_64(const void* data, size_t n);

// XXH3-64 of bytes given piece by piece (the same value as xxh3_64 of them
// all).
class Xxh3 {
 public:
  Xxh3();
  void update(const void* data, size_t n);
  uint64_t digest() const;

 private:
  XXH3_state_t state_;
};

// Which code runs: "avx2" or "generic".
const char* xxh3_implementation();

}  // namespace internal
}  // namespace dcp
