// XXH3-64 compiled for AVX2 (this file only: -mavx2), from the header of the
// libxxhash dcp++ links, inlined (XXH_INLINE_ALL names its functions apart
// from the library's). xxh3.cpp calls these only when the CPU has AVX2.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cstddef>
#include <cstdint>

namespace dcp {
namespace internal {
namespace xxh3_avx2 {

uint64_t hash(const void* data, size_t n) { return XXH3_64bits(data, n); }
void reset(void* state) { XXH3_64bits_reset(static_cast<XXH3_state_t*>(state)); }
void update(void* state, const void* data, size_t n) {
  XXH3_64bits_update(static_cast<XXH3_state_t*>(state), data, n);
}
uint64_t digest(const void* state) {
  return XXH3_64bits_digest(static_cast<const XXH3_state_t*>(state));
}
size_t state_size() { return sizeof(XXH3_state_t); }

}  // namespace xxh3_avx2
}  // namespace internal
}  // namespace dcp
