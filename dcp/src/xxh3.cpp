// XXH3-64 dispatch (xxh3.h): the library's functions or xxh3_avx2.cpp's,
// chosen once.
#include "xxh3.h"

#include <cstdlib>
#include <cstring>

namespace dcp {
namespace internal {

#ifdef DCP_HAVE_XXH3_AVX2
namespace xxh3_avx2 {  // xxh3_avx2.cpp
uint64_t hash(const void* data, size_t n);
void reset(void* state);
void update(void* state, const void* data, size_t n);
uint64_t digest(const void* state);
size_t state_size();
}  // namespace xxh3_avx2
#endif

namespace {

struct Impl {
  uint64_t (*hash)(const void*, size_t);
  void (*reset)(void*);
  void (*update)(void*, const void*, size_t);
  uint64_t (*digest)(const void*);
  const char* name;
};

uint64_t lib_hash(const void* data, size_t n) { return XXH3_64bits(data, n); }
void lib_reset(void* s) { XXH3_64bits_reset(static_cast<XXH3_state_t*>(s)); }
void lib_update(void* s, const void* data, size_t n) {
  XXH3_64bits_update(static_cast<XXH3_state_t*>(s), data, n);
}
uint64_t lib_digest(const void* s) {
  return XXH3_64bits_digest(static_cast<const XXH3_state_t*>(s));
}

Impl pick() {
#ifdef DCP_HAVE_XXH3_AVX2
  const char* env = std::getenv("DCP_XXH3");
  const bool generic = env && std::strcmp(env, "generic") == 0;
  // (the state is the same struct from the same header: checked, not assumed)
  if (!generic && __builtin_cpu_supports("avx2") && xxh3_avx2::state_size() == sizeof(XXH3_state_t))
    return {xxh3_avx2::hash, xxh3_avx2::reset, xxh3_avx2::update, xxh3_avx2::digest, "avx2"};
#endif
  return {lib_hash, lib_reset, lib_update, lib_digest, "generic"};
}

const Impl& impl() {
  static const Impl i = pick();
  return i;
}

}  // namespace

uint64_t xxh3_64(const void* data, size_t n) { return impl().hash(data, n); }

Xxh3::Xxh3() { impl().reset(&state_); }
void Xxh3::update(const void* data, size_t n) { impl().update(&state_, data, n); }
uint64_t Xxh3::digest() const { return impl().digest(&state_); }

const char* xxh3_implementation() { return impl().name; }

}  // namespace internal
}  // namespace dcp
