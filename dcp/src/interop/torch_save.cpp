// torch.save archives: data.pkl's objects as dcp++ leaves, and the catalog
// of a torch.save file (.pt / .pth) as a checkpoint of one rank.
#include "interop/torch_save.h"

#include <c10/core/ScalarType.h>

#include <cstring>
#include <map>

#include "chunk_validation.h"
#include "dcp/error.h"
#include "env.h"
#include "walk.h"

namespace dcp {
namespace internal {

namespace {

constexpr const char* kRebuildTensor = "torch._utils._rebuild_tensor_v2";
constexpr const char* kRebuildParameter = "torch._utils._rebuild_parameter";
constexpr const char* kRebuildParameterWithState = "torch._utils._rebuild_parameter_with_state";
constexpr const char* kRebuildFromType = "torch._tensor._rebuild_from_type_v2";
constexpr const char* kOrderedDict = "collections.OrderedDict";

[[noreturn]] void bad(const std::string& what, const py::Object& at, const std::string& msg) {
  throw CorruptionError(what + ": " + msg + " (at byte " + std::to_string(at.offset) +
                        " of data.pkl)");
}

const py::Object& arg(const std::string& what, const py::Object& call, size_t i) {
  if (!call.args || !call.args->is(py::Kind::kTuple) || call.args->items.size() <= i)
    bad(what, call, py::describe(call) + " has too few arguments");
  return *call.args->items[i];
}

std::vector<int64_t> int_tuple(const std::string& what, const py::Object& o, const char* field) {
  if (o.is_call_of("torch.Size") && o.args && o.args->items.size() == 1)
    return int_tuple(what, *o.args->items[0], field);
  if (!o.is(py::Kind::kTuple) && !o.is(py::Kind::kList))
    bad(what, o, std::string("a tensor's ") + field + " is " + py::describe(o) + ", not a tuple");
  std::vector<int64_t> out;
  for (const py::Object* e : o.items) {
    if (!e->is(py::Kind::kInt) || e->integer < 0)
      bad(what, *e, std::string("a tensor's ") + field + " holds " + py::describe(*e));
    out.push_back(e->integer);
  }
  return out;
}

bool is_tensor_call(const py::Object& o) {
  return o.is_call_of(kRebuildTensor) || o.is_call_of(kRebuildParameter) ||
         o.is_call_of(kRebuildParameterWithState) || o.is_call_of(kRebuildFromType);
}

StoredTensor stored_tensor(const py::Object& call, const std::string& what, int depth = 0) {
  if (depth > 4) bad(what, call, "tensor rebuilt through too many levels");
  if (call.is_call_of(kRebuildParameter) || call.is_call_of(kRebuildParameterWithState)) {
    StoredTensor t = stored_tensor(arg(what, call, 0), what, depth + 1);
    const py::Object& rg = arg(what, call, 1);
    t.requires_grad = rg.is(py::Kind::kBool) && rg.boolean;
    return t;
  }
  if (call.is_call_of(kRebuildFromType)) {
    // _rebuild_from_type_v2(func, new_type, args, state): func(*args).
    const py::Object& func = arg(what, call, 0);
    const py::Object& args = arg(what, call, 2);
    if (!func.is_global(kRebuildTensor) || !args.is(py::Kind::kTuple))
      bad(what, call, "a tensor rebuilt by " + py::describe(func) + ", which dcp++ does not read");
    py::Object inner = call;
    inner.callable = &func;
    inner.args = &args;
    return stored_tensor(inner, what, depth + 1);
  }
  if (!call.is_call_of(kRebuildTensor)) bad(what, call, py::describe(call) + " is not a tensor");
  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[,
  // metadata])
  const py::Object& storage = arg(what, call, 0);
  if (!storage.is(py::Kind::kPersistent) || !storage.args || !storage.args->is(py::Kind::kTuple) ||
      storage.args->items.size() < 5)
    bad(what, storage,
        "a tensor's storage is " + py::describe(storage) +
            ", not a persistent id ('storage', type, key, location, numel)");
  const auto& pid = storage.args->items;
  if (!pid[0]->is(py::Kind::kStr) || pid[0]->str != "storage")
    bad(what, storage, "a persistent id that is not a storage: " + py::describe(*pid[0]));
  StoredTensor t;
  bool known = false;
  if (pid[1]->is(py::Kind::kGlobal)) {
    for (const auto& s : kTorchStorageClasses)
      if (pid[1]->str == std::string("torch.") + s.name) {
        t.dtype = s.dtype;
        known = true;
      }
  }
  if (!known)
    bad(what, *pid[1],
        "a storage of type " + py::describe(*pid[1]) + ", which dcp++ does not read");
  if (!pid[2]->is(py::Kind::kStr)) bad(what, *pid[2], "a storage key that is not a string");
  t.storage_key = pid[2]->str;
  if (!pid[4]->is(py::Kind::kInt) || pid[4]->integer < 0)
    bad(what, *pid[4], "a storage size that is " + py::describe(*pid[4]));
  t.storage_numel = pid[4]->integer;
  const py::Object& off = arg(what, call, 1);
  if (!off.is(py::Kind::kInt) || off.integer < 0)
    bad(what, off, "a storage offset that is " + py::describe(off));
  t.storage_offset = off.integer;
  t.sizes = int_tuple(what, arg(what, call, 2), "size");
  t.strides = int_tuple(what, arg(what, call, 3), "stride");
  if (t.strides.size() != t.sizes.size())
    bad(what, call,
        "a tensor with " + std::to_string(t.sizes.size()) + " sizes and " +
            std::to_string(t.strides.size()) + " strides");
  const py::Object& rg = arg(what, call, 4);
  t.requires_grad = rg.is(py::Kind::kBool) && rg.boolean;
  if (call.args->items.size() > 6) {
    // Python 1.13+: a dict of flags; conj / neg tensors are not plain data.
    const py::Object& meta = *call.args->items[6];
    for (const auto& [k, v] : meta.entries)
      if (k->is(py::Kind::kStr) && v->is(py::Kind::kBool) && v->boolean)
        bad(what, meta, "a tensor with the '" + k->str + "' bit set, which dcp++ does not read");
  }
  return t;
}

// UTF-8 text -> the latin-1 bytes _codecs.encode(text, "latin1") gives.
bool latin1_bytes(const std::string& utf8, std::string& out) {
  out.clear();
  for (size_t i = 0; i < utf8.size(); ++i) {
    const auto c = static_cast<unsigned char>(utf8[i]);
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else if ((c & 0xE0) == 0xC0 && i + 1 < utf8.size()) {
      const unsigned cp = ((c & 0x1F) << 6) | (static_cast<unsigned char>(utf8[++i]) & 0x3F);
      if (cp > 0xFF) return false;
      out += static_cast<char>(cp);
    } else {
      return false;
    }
  }
  return true;
}

struct Converter {
  const std::string& what;
  std::vector<TorchLeaf>& out;
  int depth = 0;

  // The entries of a dict or an OrderedDict, or nullptr when `o` is neither.
  static const std::vector<std::pair<const py::Object*, const py::Object*>>* entries(
      const py::Object& o) {
    if (o.is(py::Kind::kDict)) return &o.entries;
    if (o.is_call_of(kOrderedDict)) return &o.entries;
    return nullptr;
  }
  static const std::vector<const py::Object*>* sequence(const py::Object& o) {
    if (o.is(py::Kind::kList) || o.is(py::Kind::kTuple)) return &o.items;
    return nullptr;
  }

  bool holds_tensor(const py::Object& o, int d = 0) const {
    if (d > 200) return false;
    if (is_tensor_call(o)) return true;
    if (auto* e = entries(o)) {
      for (const auto& kv : *e)
        if (holds_tensor(*kv.second, d + 1)) return true;
    } else if (auto* s = sequence(o)) {
      for (const py::Object* x : *s)
        if (holds_tensor(*x, d + 1)) return true;
    }
    return false;
  }

  // A plain value, or the reason it is not one.
  bool plain(const py::Object& o, Value& v, std::string& why, int d = 0) const {
    if (d > 200) {
      why = "a value nested more than 200 levels deep";
      return false;
    }
    switch (o.kind) {
      case py::Kind::kNone:
        v = Value();
        return true;
      case py::Kind::kBool:
        v = Value(o.boolean);
        return true;
      case py::Kind::kInt:
        v = Value(static_cast<long long>(o.integer));
        return true;
      case py::Kind::kFloat:
        v = Value(o.number);
        return true;
      case py::Kind::kStr:
        v = Value(o.str);
        return true;
      case py::Kind::kBytes:
        v = Value(Bytes{o.str});
        return true;
      case py::Kind::kBigInt:
        why = "an int beyond 64 bits (" + std::to_string(o.str.size()) + " bytes)";
        return false;
      default:
        break;
    }
    if (auto* s = sequence(o)) {
      List l;
      for (const py::Object* x : *s) {
        l.emplace_back();
        if (!plain(*x, l.back(), why, d + 1)) return false;
      }
      v = Value(std::move(l));
      return true;
    }
    if (auto* e = entries(o)) {
      Dict m;
      for (const auto& [k, x] : *e) {
        std::string key;
        if (!dict_key(*k, key, why)) return false;
        Value item;
        if (!plain(*x, item, why, d + 1)) return false;
        m[key] = std::move(item);
      }
      v = Value(std::move(m));
      return true;
    }
    if (o.is_call_of("_codecs.encode") && o.args && o.args->items.size() == 2 &&
        o.args->items[0]->is(py::Kind::kStr)) {
      std::string b;
      if (latin1_bytes(o.args->items[0]->str, b)) {
        v = Value(Bytes{std::move(b)});
        return true;
      }
    }
    if (is_tensor_call(o)) {
      why = "a tensor inside a plain value";
      return false;
    }
    if (o.is(py::Kind::kCall) && o.callable && o.callable->is(py::Kind::kGlobal))
      why = "a Python object of class " + o.callable->str;
    else
      why = "a Python " + py::describe(o);
    return false;
  }

  static bool dict_key(const py::Object& k, std::string& key, std::string& why) {
    if (k.is(py::Kind::kStr)) {
      key = k.str;
      return true;
    }
    if (k.is(py::Kind::kInt)) {
      key = std::to_string(k.integer);
      return true;
    }
    why = "a dict key that is " + py::describe(k) + " (dcp++ keys are strings; ints become theirs)";
    return false;
  }

  void leaf(const py::Object& o, ObjectPath& path) {
    if (++depth > 200) {
      --depth;
      out.push_back({path, UnreadableValue{"a value nested more than 200 levels deep"}});
      return;
    }
    if (is_tensor_call(o)) {
      out.push_back({path, stored_tensor(o, what + " key '" + path_string(path) + "'")});
    } else if (auto* e = entries(o); e && !e->empty()) {
      for (const auto& [k, x] : *e) {
        std::string key, why;
        if (!dict_key(*k, key, why)) {
          out.push_back({path, UnreadableValue{why}});
          break;
        }
        path.push_back(PathElement{false, key, 0});
        leaf(*x, path);
        path.pop_back();
      }
    } else if (auto* s = sequence(o); s && holds_tensor(o)) {
      for (size_t i = 0; i < s->size(); ++i) {
        path.push_back(PathElement{true, "", static_cast<int64_t>(i)});
        leaf(*(*s)[i], path);
        path.pop_back();
      }
    } else {
      Value v;
      std::string why;
      if (plain(o, v, why))
        out.push_back({path, std::move(v)});
      else
        out.push_back({path, UnreadableValue{why}});
    }
    --depth;
  }
};

std::set<std::string> make_torch_save_globals() {
  std::set<std::string> g = {kRebuildTensor,
                             kRebuildParameter,
                             kRebuildParameterWithState,
                             kRebuildFromType,
                             kOrderedDict,
                             "torch.Size",
                             "torch.Tensor",
                             "torch.nn.parameter.Parameter",
                             "_codecs.encode",
                             "builtins.set",
                             "builtins.frozenset",
                             "builtins.bytearray",
                             "torch.device",
                             "torch.serialization._get_layout"};
  for (const auto& s : kTorchStorageClasses) g.insert(std::string("torch.") + s.name);
  return g;
}

}  // namespace

const std::set<std::string>& torch_save_globals() {
  static const std::set<std::string> globals = make_torch_save_globals();
  return globals;
}

std::vector<TorchLeaf> torch_leaves(const py::Object& root, const ObjectPath& base,
                                    const std::string& what) {
  std::vector<TorchLeaf> out;
  Converter c{what, out};
  ObjectPath path = base;
  c.leaf(root, path);
  return out;
}

bool torch_plain_value(const py::Object& o, Value& v, std::string& why) {
  static const std::string what;
  std::vector<TorchLeaf> unused;
  return Converter{what, unused}.plain(o, v, why);
}

bool is_legacy_torch_save(std::string_view head) {
  // pickle of the magic number 0x1950a86a20f9469cfc6c: PROTO 2, LONG1 10 bytes.
  static const unsigned char kLegacy[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c,
                                          0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
  return head.size() >= sizeof kLegacy && std::memcmp(head.data(), kLegacy, sizeof kLegacy) == 0;
}

TorchArchive open_torch_archive(const RandomAccessFile& file, uint64_t base, uint64_t length,
                                const std::string& display, bool verify_crc) {
  TorchArchive a;
  a.zip = std::make_unique<ZipArchive>(&file, base, length, display);
  if (!a.zip->find("version") && !a.zip->find(".data/version"))
    throw CorruptionError(display + ": not a torch.save archive (no 'version' record)");
  if (const ZipRecord* bo = a.zip->find("byteorder")) {
    const std::string order = a.zip->read(*bo, verify_crc);
    if (order != "little")
      throw CorruptionError(display + ": byte order '" + order +
                            "': dcp++ reads little-endian torch.save archives only");
  }
  const std::string pkl = a.zip->read(a.zip->get("data.pkl"), verify_crc);
  a.pickle = py::unpickle(pkl, torch_save_globals(), "data.pkl of " + display);
  return a;
}

RawTensor raw_tensor(const TorchArchive& archive, const StoredTensor& t,
                     const std::string& file_path, const std::string& what) {
  const ZipRecord& rec = archive.zip->get("data/" + t.storage_key);
  const uint64_t data = archive.zip->data_offset(rec);
  const uint64_t es = c10::elementSize(t.dtype);
  RawTensor r;
  r.file = file_path;
  r.offset = data;
  r.storage_bytes = rec.size;
  r.dtype = t.dtype;
  r.sizes = t.sizes;
  r.strides = t.strides;
  r.storage_offset = t.storage_offset;
  r.crc = rec.crc32;
  r.crc_begin = data;
  r.crc_length = rec.size;
  r.what = what + " (record '" + rec.name + "' of " + archive.zip->display() + ")";
  if (static_cast<uint64_t>(t.storage_numel) > rec.size / es)
    throw CorruptionError(r.what + ": the storage has " + std::to_string(t.storage_numel) +
                          " elements of " + std::to_string(es) + " bytes, the record " +
                          std::to_string(rec.size) + " bytes");
  // The last element the tensor reaches lies inside the storage.
  bool empty = false;
  uint64_t last = static_cast<uint64_t>(t.storage_offset);
  for (size_t d = 0; d < t.sizes.size(); ++d) {
    if (t.sizes[d] == 0) empty = true;
    const uint64_t reach = static_cast<uint64_t>(t.sizes[d] ? t.sizes[d] - 1 : 0);
    if (t.strides[d] != 0 && reach > (uint64_t{1} << 62) / static_cast<uint64_t>(t.strides[d]))
      throw CorruptionError(r.what + ": implausible size and stride");
    last += reach * static_cast<uint64_t>(t.strides[d]);
  }
  if (!empty && last >= static_cast<uint64_t>(t.storage_numel))
    throw CorruptionError(r.what + ": the tensor reaches element " + std::to_string(last) +
                          " of a storage of " + std::to_string(t.storage_numel));
  return r;
}

void add_tensor_leaf(Catalog& cat, const std::string& key, const StoredTensor& t, RawTensor raw,
                     const StorageInfo& info) {
  const std::vector<int64_t> zeros(t.sizes.size(), 0);
  TensorStorageMetadata tm;
  tm.properties.dtype = t.dtype;
  tm.properties.requires_grad = t.requires_grad;
  tm.size = t.sizes;
  tm.chunks.push_back({zeros, t.sizes});
  cat.metadata.state_dict_metadata.emplace(key, std::move(tm));
  MetadataIndex index(key, zeros);
  cat.metadata.storage_data[index] = info;
  cat.sources.emplace(index, std::move(raw));
}

void add_value_leaf(Catalog& cat, const std::string& key, TorchLeaf& leaf,
                    const StorageInfo& info) {
  cat.metadata.state_dict_metadata.emplace(key, BytesStorageMetadata{});
  MetadataIndex index(key);
  cat.metadata.storage_data[index] = info;
  if (auto* v = std::get_if<Value>(&leaf.value))
    cat.sources.emplace(index, InlineValue{std::move(*v)});
  else
    cat.sources.emplace(index, std::get<UnreadableValue>(leaf.value));
}

namespace {

std::string base_name(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

Catalog torch_save_catalog(Env& env, const std::string& path, const std::string& display) {
  std::unique_ptr<RandomAccessFile> file = env.new_random_access_file(path);
  char head[16] = {};
  const size_t got = file->read(0, sizeof head, head);
  if (is_legacy_torch_save(std::string_view(head, got)))
    throw InvalidArgumentError(
        "'" + display +
        "' is a torch.save file in the legacy format (PyTorch before 1.6, or "
        "_use_new_zipfile_serialization=False); dcp++ reads the zip format: load it in Python "
        "and torch.save it again");
  TorchArchive archive = open_torch_archive(*file, 0, file->size(), "'" + display + "'", true);
  const py::Object& root = archive.pickle.root();
  if (!root.is(py::Kind::kDict) && !root.is_call_of(kOrderedDict))
    throw InvalidArgumentError("'" + display + "' holds " + py::describe(root) +
                               ", not a dict: dcp++ loads state dicts (torch.save a dict)");

  Catalog cat;
  cat.format = "torch.save";
  Metadata& md = cat.metadata;
  md.world_size = 1;
  md.storage_meta = StorageMeta{display, ""};
  const std::string rel = base_name(path);
  FlattenMapping mapping;
  for (TorchLeaf& leaf : torch_leaves(root, {}, "'" + display + "'")) {
    const std::string key = path_string(leaf.path);
    if (!mapping.emplace(key, leaf.path).second)
      throw InvalidArgumentError("'" + display + "': two entries give the flat key '" + key + "'");
    if (auto* t = std::get_if<StoredTensor>(&leaf.value)) {
      RawTensor raw = raw_tensor(archive, *t, path, "key '" + key + "'");
      const uint64_t es = c10::elementSize(t->dtype);
      const StorageInfo info{rel, raw.offset + static_cast<uint64_t>(t->storage_offset) * es,
                             static_cast<uint64_t>(checked_volume(t->sizes)) * es};
      add_tensor_leaf(cat, key, *t, std::move(raw), info);
    } else {
      add_value_leaf(cat, key, leaf, StorageInfo{rel, 0, 0});
    }
  }
  md.planner_data = encode_flatten_mapping(mapping);
  return cat;
}

}  // namespace internal
}  // namespace dcp
