// What dcp++ writes for torch.load (interop/torch_save_writer.h): tensors as
// torch.save's pickler spells them at protocol 2 (torch/serialization.py
// _save and Tensor.__reduce_ex__), plain values as CPython's pickler does.
#include "interop/torch_save_writer.h"

#include <c10/util/Exception.h>

#include "dcp/error.h"
#include "dcp/metadata.h"
#include "interop/pickle.h"
#include "interop/torch_save.h"
#include "interop/zip_writer.h"

namespace dcp {
namespace internal {

namespace {

// A tuple of ints: TUPLE1..3 as CPython writes them, MARK ... TUPLE for more.
void push_ints(py::PickleWriter& w, const std::vector<int64_t>& v) {
  if (v.size() > 3) w.mark();
  for (int64_t x : v) w.integer(x);
  if (v.size() > 3) {
    w.tuple();
  } else {
    w.tuple_of(static_cast<int>(v.size()));
  }
}

[[noreturn]] void not_plain(const std::string& what, const std::string& where, const Value& v) {
  throw InvalidArgumentError(what + ": " + where + " is " + describe(v) +
                             ", which is not a plain value (none, bool, int, float, string, "
                             "bytes, or a list or dict of them)");
}

void check_text(const std::string& what, const std::string& where, const std::string& s) {
  if (!py::valid_utf8(s))
    throw InvalidArgumentError(what + ": " + where +
                               " is not UTF-8 text, which a Python str must be (store it as "
                               "dcp::Bytes)");
}

void push_plain(py::PickleWriter& w, const Value& v, const std::string& what,
                const std::string& where, int depth) {
  // Python's unpickler recurses on nothing, but pickle.dumps of the same object would: keep
  // to what a Python program can build and print.
  if (depth > 100)
    throw InvalidArgumentError(what + ": " + where + " is nested more than 100 levels deep");
  switch (v.kind()) {
    case Value::Kind::kNone:
      w.none();
      return;
    case Value::Kind::kBool:
      w.boolean(v.to_bool());
      return;
    case Value::Kind::kInt:
      w.integer(v.to_int());
      return;
    case Value::Kind::kDouble:
      w.real(v.to_double());
      return;
    case Value::Kind::kString:
      check_text(what, where, v.to_string());
      w.str(v.to_string());
      return;
    case Value::Kind::kBytes:
      w.bytes(v.to_bytes().data);
      return;
    case Value::Kind::kList: {
      w.empty_list();
      const List& l = v.list();
      if (l.empty()) return;
      w.mark();
      for (size_t i = 0; i < l.size(); ++i)
        push_plain(w, l[i], what, where + "[" + std::to_string(i) + "]", depth + 1);
      w.appends();
      return;
    }
    case Value::Kind::kDict: {
      w.empty_dict();
      const Dict& d = v.dict();
      if (d.empty()) return;
      w.mark();
      for (const auto& kv : d) {
        const std::string sub = where + "['" + kv.first + "']";
        check_text(what, "the key of " + sub, kv.first);
        w.str(kv.first);
        push_plain(w, kv.second, what, sub, depth + 1);
      }
      w.setitems();
      return;
    }
    default:
      not_plain(what, where, v);
  }
}

}  // namespace

const char* torch_storage_class(at::ScalarType dtype, const std::string& what) {
  for (const auto& s : kTorchStorageClasses)
    if (s.dtype == dtype) return s.name;
  throw InvalidArgumentError(what + ": dtype " + std::string(dtype_name(dtype)) + " (" +
                             c10::toString(dtype) +
                             ") has no storage class in PyTorch 1.13's torch.save format "
                             "(it stores float32/64, float16, bfloat16, int8/16/32/64, uint8, "
                             "bool, complex64 and complex128): convert the tensor first");
}

void pickle_tensor(py::PickleWriter& w, const std::string& storage_key, at::ScalarType dtype,
                   const std::vector<int64_t>& sizes, bool requires_grad, const std::string& what) {
  const char* cls = torch_storage_class(dtype, what);
  int64_t numel = 1;
  std::vector<int64_t> strides(sizes.size());
  // Contiguous strides as c10 computes them: a dimension of size 0 counts as 1.
  for (size_t i = sizes.size(); i-- > 0;) {
    if (sizes[i] < 0)
      throw InvalidArgumentError(what + ": a tensor with a negative size (" +
                                 std::to_string(sizes[i]) + ")");
    strides[i] = numel;
    numel *= std::max<int64_t>(sizes[i], 1);
  }
  int64_t elements = 1;
  for (int64_t s : sizes) elements *= s;

  w.global("torch._utils", "_rebuild_tensor_v2");
  w.mark();
  // The storage: persistent id ("storage", torch.<Class>, key, "cpu", numel).
  w.mark();
  w.str("storage");
  w.global("torch", cls);
  w.str(storage_key);
  w.str("cpu");
  w.integer(elements);
  w.tuple();
  w.binpersid();
  w.integer(0);  // storage offset
  push_ints(w, sizes);
  push_ints(w, strides);
  w.boolean(requires_grad);
  // backward_hooks: collections.OrderedDict()
  w.global("collections", "OrderedDict");
  w.tuple_of(0);
  w.reduce();
  w.tuple();
  w.reduce();
}

void pickle_plain_value(py::PickleWriter& w, const Value& value, const std::string& what) {
  push_plain(w, value, what, "the value", 0);
}

std::string torch_save_value(const Value& value, const std::string& what) {
  py::PickleWriter w;
  pickle_plain_value(w, value, what);
  const std::string pkl = w.finish();
  std::string out;
  ZipWriter zip("archive", [&out](const void* data, size_t n) {
    out.append(static_cast<const char*>(data), n);
  });
  zip.add("data.pkl", pkl);
  zip.add("byteorder", std::string_view("little"));
  zip.finish();
  return out;
}

}  // namespace internal
}  // namespace dcp
