// What dcp++ writes for PyTorch to read: the pickled objects of torch.save
// archives (tensors by storage record, plain values) and whole small
// archives (DCP BYTE_IO items). The containers are interop/zip_writer.h's.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>
#include <vector>

#include "dcp/value.h"
#include "interop/pickle_writer.h"

namespace dcp {
namespace internal {

// The storage class torch.save names for `dtype` ("FloatStorage",
// "BFloat16Storage", ...: the ones Python 1.13 has). An InvalidArgumentError
// naming `what` and the dtype for one it cannot store (complex32, the
// float8 and uint16/32/64 types, quantized types).
const char* torch_storage_class(at::ScalarType dtype, const std::string& what);

// Pushes the tensor torch.load rebuilds from storage record "data/<key>":
// torch._utils._rebuild_tensor_v2(("storage", torch.<Class>, key, "cpu",
// numel), 0, sizes, contiguous strides, requires_grad, OrderedDict()).
void pickle_tensor(py::PickleWriter& w, const std::string& storage_key, at::ScalarType dtype,
                   const std::vector<int64_t>& sizes, bool requires_grad, const std::string& what);

// Pushes a plain value (none, bool, int, double, string, bytes, and lists and
// dicts of them) as the Python object it stands for: a dict as a plain dict
// with str keys, a list as a list, bytes as bytes. InvalidArgumentError
// naming `what` for anything else (tensors included).
void pickle_plain_value(py::PickleWriter& w, const Value& value, const std::string& what);

// A complete torch.save archive (prefix "archive") of a plain value: what
// DCP's BYTE_IO items hold, and what torch.load(weights_only=False) opens.
// Records data.pkl, byteorder ("little"), version ("3\n").
std::string torch_save_value(const Value& value, const std::string& what);

}  // namespace internal
}  // namespace dcp
