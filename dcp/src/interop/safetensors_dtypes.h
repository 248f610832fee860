// The dtypes of the safetensors format (huggingface/safetensors
// safetensors/src/tensor.rs, Dtype), shared by the reader
// (interop/safetensors.cpp) and the writer of `ckpt convert` (convert.cpp).
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

namespace dcp {
namespace internal {

struct SafetensorsDtype {
  const char* name;
  at::ScalarType type;
  uint64_t size;  // bytes per element
  // Its place in the format's Dtype enum, which is in increasing alignment
  // (BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0,
  // F8_E4M3FNUZ, F8_E5M2FNUZ, I16, U16, F16, BF16, I32, U32, F32, C64, F64,
  // I64, U64): the reference writer orders a file's tensors by it,
  // descending, then by name.
  int rank;
};

// Every safetensors dtype LibTorch 1.13 has.
inline constexpr SafetensorsDtype kSafetensorsDtypes[] = {
    {"F64", at::kDouble, 8, 19},    {"F32", at::kFloat, 4, 17},        {"F16", at::kHalf, 2, 13},
    {"BF16", at::kBFloat16, 2, 14}, {"I64", at::kLong, 8, 20},         {"I32", at::kInt, 4, 15},
    {"I16", at::kShort, 2, 11},     {"I8", at::kChar, 1, 5},           {"U8", at::kByte, 1, 4},
    {"BOOL", at::kBool, 1, 0},      {"C64", at::kComplexFloat, 8, 18},
};

// The rest of the format's dtypes, which LibTorch 1.13 lacks.
inline constexpr const char* kSafetensorsOtherDtypes[] = {
    "F4",          "F6_E2M3",     "F6_E3M2", "F8_E5M2", "F8_E4M3", "F8_E8M0",
    "F8_E4M3FNUZ", "F8_E5M2FNUZ", "U16",     "U32",     "U64"};

}  // namespace internal
}  // namespace dcp
