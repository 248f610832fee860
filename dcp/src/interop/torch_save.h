// The objects inside torch.save archives (data.pkl, protocol 2) as dcp++
// sees them: tensors (by storage record), plain values, and what it does
// not read. Shared by the torch.save reader and the PyTorch DCP reader
// (whose items are torch.save archives).
#pragma once

#include <ATen/core/Tensor.h>

#include <set>
#include <string>
#include <variant>
#include <vector>

#include "dcp/default_planner.h"
#include "dcp/value.h"
#include "interop/catalog.h"
#include "interop/pickle.h"
#include "interop/zip.h"

namespace dcp {
namespace internal {

// A tensor rebuilt by torch._utils._rebuild_tensor_v2 (or _rebuild_parameter).
struct StoredTensor {
  std::string storage_key;  // record "data/<key>"
  at::ScalarType dtype = at::kFloat;
  int64_t storage_numel = 0;  // elements of the storage (from the persistent id)
  int64_t storage_offset = 0;
  std::vector<int64_t> sizes, strides;
  bool requires_grad = false;
};

// One leaf of an unpickled object, flattened as dcp++ flattens state dicts
// (dicts always, lists and tuples when they hold tensors; int dict keys as
// their decimal strings).
struct TorchLeaf {
  ObjectPath path;
  std::variant<StoredTensor, Value, UnreadableValue> value;
};

// torch.<Name>Storage, as LibTorch's pickler and Python's torch.save name
// them: the typed storages of Python 1.13 (torch._storage_classes, less the
// quantized ones). Read by the torch.save reader, written by
// torch_save_writer.cpp.
struct TorchStorageClass {
  const char* name;
  at::ScalarType dtype;
};
inline constexpr TorchStorageClass kTorchStorageClasses[] = {
    {"FloatStorage", at::kFloat},
    {"DoubleStorage", at::kDouble},
    {"HalfStorage", at::kHalf},
    {"BFloat16Storage", at::kBFloat16},
    {"LongStorage", at::kLong},
    {"IntStorage", at::kInt},
    {"ShortStorage", at::kShort},
    {"CharStorage", at::kChar},
    {"ByteStorage", at::kByte},
    {"BoolStorage", at::kBool},
    {"ComplexFloatStorage", at::kComplexFloat},
    {"ComplexDoubleStorage", at::kComplexDouble},
};

// The globals data.pkl may name (tensor rebuilding, storages, dtypes,
// OrderedDict, ...).
const std::set<std::string>& torch_save_globals();

// The leaves of `root` below `base` (`what` names the object in messages).
// A non-container root is one leaf at `base`.
std::vector<TorchLeaf> torch_leaves(const py::Object& root, const ObjectPath& base,
                                    const std::string& what);

// `o` as one plain value, not flattened (a dict stays a dict); false, with
// the reason in `why`, when it is not one (a tensor inside, an object).
bool torch_plain_value(const py::Object& o, Value& v, std::string& why);

// True when the first bytes are the legacy (pre-1.6) torch.save format.
bool is_legacy_torch_save(std::string_view head);

// An opened torch.save archive: its zip directory and its unpickled data.pkl.
struct TorchArchive {
  std::unique_ptr<ZipArchive> zip;
  py::Pickle pickle;
};
TorchArchive open_torch_archive(const RandomAccessFile& file, uint64_t base, uint64_t length,
                                const std::string& display, bool verify_crc);

// Where the elements of `t` are: its storage record in `archive`.
// `file_path` is the Env path of the file that holds the archive.
RawTensor raw_tensor(const TorchArchive& archive, const StoredTensor& t,
                     const std::string& file_path, const std::string& what);

// Adds a leaf to `cat` under `key`, with `info` as its storage_data entry
// (the bytes it covers): a tensor as one chunk read from `raw`, or a plain
// or unreadable value (TorchLeaf::value of another kind).
void add_tensor_leaf(Catalog& cat, const std::string& key, const StoredTensor& t, RawTensor raw,
                     const StorageInfo& info);
void add_value_leaf(Catalog& cat, const std::string& key, TorchLeaf& leaf, const StorageInfo& info);

}  // namespace internal
}  // namespace dcp
