// PyTorch DCP directories (FileSystemWriter's layout) as a catalog: the
// pickled .metadata (or one __<r>.metadata per rank), read by the
// restricted unpickler, becomes dcp++ metadata; tensor items stay torch.save
// archives opened when read; BYTE_IO items are decoded here (they are small),
// and a dict among them (1.13 saves nested dicts whole) is flattened as
// dcp++ flattens, its tensors read from the archive's records in place.
//
// A directory dcp++ wrote in the pytorch-dcp format has its sidecar
// (.metadata.dcp, interop/pytorch_dcp_writer.h) beside .metadata: when it
// is bound to this .metadata (its XXH3-64 matches), the catalog takes the
// flattening map, world size and every item's XXH3-64 from it, and each
// BYTE_IO item is exactly one key (what dcp++ saved), checked against its
// checksum. A sidecar of another save (.metadata rewritten since) is ignored.
#include <spdlog/spdlog.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "chunk_validation.h"
#include "dcp/error.h"
#include "dcp/logging.h"
#include "env.h"
#include "interop/catalog.h"
#include "interop/pickle.h"
#include "interop/pytorch_dcp_writer.h"
#include "interop/torch_save.h"
#include "interop/zip.h"
#include "walk.h"
#include "xxh3.h"

namespace dcp {
namespace internal {

namespace {

// The module paths of 1.13 (torch.distributed._shard.*) and 2.x
// (torch.distributed.checkpoint.*).
const char* const kMetadataModules[] = {"torch.distributed.checkpoint.metadata",
                                        "torch.distributed._shard.checkpoint.metadata"};
const char* const kFilesystemModules[] = {"torch.distributed.checkpoint.filesystem",
                                          "torch.distributed._shard.checkpoint.filesystem"};
const char* const kShardedTensorMetadata = "torch.distributed._shard.sharded_tensor.metadata";

struct DtypeName {
  const char* name;
  at::ScalarType dtype;  // Undefined: not in LibTorch 1.13
};
constexpr DtypeName kDtypes[] = {
    {"float32", at::kFloat},
    {"float", at::kFloat},
    {"float64", at::kDouble},
    {"double", at::kDouble},
    {"float16", at::kHalf},
    {"half", at::kHalf},
    {"bfloat16", at::kBFloat16},
    {"int64", at::kLong},
    {"long", at::kLong},
    {"int32", at::kInt},
    {"int", at::kInt},
    {"int16", at::kShort},
    {"short", at::kShort},
    {"int8", at::kChar},
    {"uint8", at::kByte},
    {"bool", at::kBool},
    {"complex64", at::kComplexFloat},
    {"cfloat", at::kComplexFloat},
    {"complex128", at::kComplexDouble},
    {"cdouble", at::kComplexDouble},
    {"complex32", at::kComplexHalf},
    {"chalf", at::kComplexHalf},
    {"uint16", at::ScalarType::Undefined},
    {"uint32", at::ScalarType::Undefined},
    {"uint64", at::ScalarType::Undefined},
    {"float8_e4m3fn", at::ScalarType::Undefined},
    {"float8_e5m2", at::ScalarType::Undefined},
    {"float8_e4m3fnuz", at::ScalarType::Undefined},
    {"float8_e5m2fnuz", at::ScalarType::Undefined},
    {"float8_e8m0fnu", at::ScalarType::Undefined},
    {"quint8", at::ScalarType::Undefined},
    {"qint8", at::ScalarType::Undefined},
    {"qint32", at::ScalarType::Undefined},
    {"quint4x2", at::ScalarType::Undefined},
};

std::set<std::string> make_globals() {
  std::set<std::string> g;
  for (const char* m : kMetadataModules)
    for (const char* c :
         {"Metadata", "TensorStorageMetadata", "ChunkStorageMetadata", "BytesStorageMetadata",
          "MetadataIndex", "TensorProperties", "_MEM_FORMAT_ENCODING", "StorageMeta"})
      g.insert(std::string(m) + "." + c);
  for (const char* m : kFilesystemModules) g.insert(std::string(m) + "._StorageInfo");
  g.insert(std::string(kShardedTensorMetadata) + ".TensorProperties");
  g.insert(std::string(kShardedTensorMetadata) + ".MEM_FORMAT_ENCODING");
  for (const auto& d : kDtypes) g.insert(std::string("torch.") + d.name);
  for (const char* s :
       {"torch.Size", "torch.serialization._get_layout", "builtins.getattr", "pathlib.PosixPath",
        "pathlib.PurePosixPath", "pathlib._local.PosixPath", "pathlib.WindowsPath",
        "pathlib._local.WindowsPath", "collections.OrderedDict", "torch.strided"})
    g.insert(s);
  return g;
}

const std::set<std::string>& metadata_globals() {
  static const std::set<std::string> g = make_globals();
  return g;
}

// Reads one pickled DCP metadata file into `cat`.
class MetadataParser {
 public:
  MetadataParser(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void fail(const py::Object& at, const std::string& msg) const {
    throw CorruptionError(source_ + ": " + msg + " (at byte " + std::to_string(at.offset) + ")");
  }

  // The class name of a NEWOBJ/REDUCE object of one of the DCP modules ("" otherwise).
  static std::string dcp_class(const py::Object& o) {
    if (!o.is(py::Kind::kCall) || !o.callable || !o.callable->is(py::Kind::kGlobal)) return "";
    const std::string& q = o.callable->str;
    const size_t dot = q.rfind('.');
    return dot == std::string::npos ? "" : q.substr(dot + 1);
  }

  void expect_class(const py::Object& o, const char* cls, const char* what) const {
    if (dcp_class(o) != cls)
      fail(o, std::string(what) + " is " + py::describe(o) + ", not a " + cls);
  }

  // The field `name` of a dataclass object's state dict; nullptr when absent.
  static const py::Object* field(const py::Object& o, std::string_view name) {
    if (!o.state || !o.state->is(py::Kind::kDict)) return nullptr;
    for (const auto& [k, v] : o.state->entries)
      if (k->is(py::Kind::kStr) && k->str == name) return v;
    return nullptr;
  }
  const py::Object& required(const py::Object& o, std::string_view name) const {
    const py::Object* f = field(o, name);
    if (!f) fail(o, py::describe(o) + " has no field '" + std::string(name) + "'");
    return *f;
  }

  const std::string& str(const py::Object& o, const char* what) const {
    if (!o.is(py::Kind::kStr))
      fail(o, std::string(what) + " is " + py::describe(o) + ", not a str");
    return o.str;
  }
  int64_t integer(const py::Object& o, const char* what) const {
    if (!o.is(py::Kind::kInt) || o.integer < 0)
      fail(o, std::string(what) + " is " + py::describe(o) + ", not a non-negative int");
    return o.integer;
  }
  std::vector<int64_t> size(const py::Object& o, const char* what) const {
    const py::Object* t = &o;
    if (o.is_call_of("torch.Size")) {
      if (!o.args || o.args->items.size() != 1)
        fail(o, std::string(what) + ": a malformed torch.Size");
      t = o.args->items[0];
    }
    if (!t->is(py::Kind::kTuple) && !t->is(py::Kind::kList))
      fail(o, std::string(what) + " is " + py::describe(o) + ", not a torch.Size");
    std::vector<int64_t> out;
    for (const py::Object* e : t->items) out.push_back(integer(*e, what));
    return out;
  }

  at::ScalarType dtype(const py::Object& o, const std::string& key) const {
    if (o.is(py::Kind::kGlobal) && o.str.compare(0, 6, "torch.") == 0) {
      const std::string name = o.str.substr(6);
      for (const auto& d : kDtypes)
        if (name == d.name) {
          if (d.dtype == at::ScalarType::Undefined)
            throw InvalidArgumentError(source_ + ": key '" + key + "' has dtype " + o.str +
                                       ", which LibTorch 1.13 does not have");
          return d.dtype;
        }
    }
    fail(o, "key '" + key + "': the dtype is " + py::describe(o));
  }

  TensorProperties properties(const py::Object& o, const std::string& key) const {
    expect_class(o, "TensorProperties", "a tensor's properties");
    TensorProperties p;
    if (o.state && o.state->is(py::Kind::kTuple)) {
      // __getstate__: (dtype, layout, requires_grad, memory_format, pin_memory[, ...]).
      if (o.state->items.size() < 5)
        fail(o, "key '" + key + "': a TensorProperties state of " +
                    std::to_string(o.state->items.size()) + " entries, not 5");
      p.dtype = dtype(*o.state->items[0], key);
      const py::Object& rg = *o.state->items[2];
      p.requires_grad = rg.is(py::Kind::kBool) && rg.boolean;
    } else if (const py::Object* dt = field(o, "dtype")) {
      p.dtype = dtype(*dt, key);
      const py::Object* rg = field(o, "requires_grad");
      p.requires_grad = rg && rg->is(py::Kind::kBool) && rg->boolean;
    } else {
      fail(o, "key '" + key + "': TensorProperties without a dtype");
    }
    return p;
  }

  StorageMetadata entry(const py::Object& o, const std::string& key) const {
    const std::string cls = dcp_class(o);
    if (cls == "BytesStorageMetadata") return BytesStorageMetadata{};
    if (cls != "TensorStorageMetadata")
      fail(o, "key '" + key + "' is described by " + py::describe(o));
    TensorStorageMetadata t;
    t.properties = properties(required(o, "properties"), key);
    t.size = size(required(o, "size"), "a tensor's size");
    const py::Object& chunks = required(o, "chunks");
    if (!chunks.is(py::Kind::kList)) fail(chunks, "key '" + key + "': chunks are not a list");
    for (const py::Object* c : chunks.items) {
      expect_class(*c, "ChunkStorageMetadata", "a chunk");
      t.chunks.push_back({size(required(*c, "offsets"), "chunk offsets"),
                          size(required(*c, "sizes"), "chunk sizes")});
    }
    return t;
  }

  MetadataIndex index(const py::Object& o) const {
    expect_class(o, "MetadataIndex", "a storage_data key");
    MetadataIndex i(str(required(o, "fqn"), "MetadataIndex.fqn"));
    if (const py::Object* off = field(o, "offset"); off && !off->is(py::Kind::kNone))
      i.offset = size(*off, "MetadataIndex.offset");
    return i;
  }

  struct Location {
    StorageInfo info;
    std::vector<std::string> transforms;
  };
  Location location(const py::Object& o, const std::string& what) const {
    expect_class(o, "_StorageInfo", "a storage_data value");
    Location l;
    l.info.relative_path = str(required(o, "relative_path"), "_StorageInfo.relative_path");
    l.info.offset = static_cast<uint64_t>(integer(required(o, "offset"), "_StorageInfo.offset"));
    l.info.length = static_cast<uint64_t>(integer(required(o, "length"), "_StorageInfo.length"));
    if (l.info.relative_path.empty() || l.info.relative_path.find('/') != std::string::npos ||
        l.info.relative_path == "." || l.info.relative_path == "..")
      fail(o, what + ": relative_path '" + l.info.relative_path + "' is not a file name");
    if (const py::Object* t = field(o, "transform_descriptors"); t && !t->is(py::Kind::kNone)) {
      if (!t->is(py::Kind::kList) && !t->is(py::Kind::kTuple))
        fail(*t, what + ": transform_descriptors is not a list");
      for (const py::Object* d : t->items)
        l.transforms.push_back(str(*d, "a transform descriptor"));
    }
    return l;
  }

  static std::string path_text(const py::Object& o) {
    // PosixPath('/', 'tmp', 'ck'), a str, or None.
    if (o.is(py::Kind::kStr)) return o.str;
    if (o.is(py::Kind::kCall) && o.args) {
      std::string s;
      for (const py::Object* part : o.args->items) {
        if (!part->is(py::Kind::kStr)) return "";
        if (!s.empty() && s.back() != '/') s += '/';
        s += part->str;
      }
      return s;
    }
    return "";
  }

  const std::string source_;
};

struct Parsed {
  std::map<std::string, StorageMetadata> entries;
  std::map<MetadataIndex, MetadataParser::Location> locations;
  FlattenMapping planner_paths;  // 2.x: flat key -> path
  std::optional<StorageMeta> storage_meta;
  std::string flavour;  // "1.13" or "2.x"
};

void parse_metadata_file(const std::string& bytes, const std::string& source, Parsed& out) {
  py::Pickle p = py::unpickle(bytes, metadata_globals(), source);
  MetadataParser m(source);
  const py::Object& root = p.root();
  m.expect_class(root, "Metadata", "the root object");
  const std::string flavour =
      root.callable->str.find("._shard.") != std::string::npos ? "1.13" : "2.x";
  if (out.flavour.empty()) out.flavour = flavour;
  const py::Object& sdm = m.required(root, "state_dict_metadata");
  if (!sdm.is(py::Kind::kDict)) m.fail(sdm, "state_dict_metadata is not a dict");
  for (const auto& [k, v] : sdm.entries) {
    const std::string& key = m.str(*k, "a state_dict_metadata key");
    StorageMetadata e = m.entry(*v, key);
    auto [it, fresh] = out.entries.emplace(key, e);
    if (fresh) continue;
    // Several ranks' metadata files (use_collectives=False): the same key
    // must agree; tensors gather their chunks.
    auto* a = std::get_if<TensorStorageMetadata>(&it->second);
    auto* b = std::get_if<TensorStorageMetadata>(&e);
    if (!a != !b || (a && (a->size != b->size || !(a->properties == b->properties))))
      m.fail(*v, "key '" + key + "' is described differently by two metadata files");
    if (a)
      for (auto& c : b->chunks)
        if (std::find(a->chunks.begin(), a->chunks.end(), c) == a->chunks.end())
          a->chunks.push_back(c);
  }
  const py::Object& sd = m.required(root, "storage_data");
  if (!sd.is(py::Kind::kDict)) m.fail(sd, "storage_data is not a dict");
  for (const auto& [k, v] : sd.entries) {
    MetadataIndex idx = m.index(*k);
    auto loc = m.location(*v, "item " + to_string(idx));
    auto [it, fresh] = out.locations.emplace(idx, loc);
    if (!fresh && !(it->second.info == loc.info))
      m.fail(*v, "item " + to_string(idx) + " has two storage locations");
  }
  if (const py::Object* pd = MetadataParser::field(root, "planner_data");
      pd && pd->is(py::Kind::kDict)) {
    for (const auto& [k, v] : pd->entries) {
      if (!k->is(py::Kind::kStr) || (!v->is(py::Kind::kTuple) && !v->is(py::Kind::kList))) continue;
      ObjectPath path;
      for (const py::Object* e : v->items) {
        if (e->is(py::Kind::kStr))
          path.push_back(PathElement{false, e->str, 0});
        else if (e->is(py::Kind::kInt))
          path.push_back(PathElement{true, "", e->integer});
        else
          m.fail(*e, "planner_data of '" + k->str + "' holds " + py::describe(*e));
      }
      out.planner_paths[k->str] = std::move(path);
    }
  }
  if (const py::Object* smeta = MetadataParser::field(root, "storage_meta");
      smeta && smeta->is(py::Kind::kCall) && !out.storage_meta) {
    StorageMeta s;
    if (const py::Object* id = MetadataParser::field(*smeta, "checkpoint_id"))
      s.checkpoint_id = MetadataParser::path_text(*id);
    if (const py::Object* sid = MetadataParser::field(*smeta, "save_id");
        sid && sid->is(py::Kind::kStr))
      s.save_id = sid->str;
    out.storage_meta = s;
  }
}

}  // namespace

bool is_rank_metadata_name(const std::string& name) {
  // "__<rank>.metadata"
  if (name.size() < 12 || name.compare(0, 2, "__") != 0) return false;
  const size_t dot = name.find('.');
  if (dot == std::string::npos || name.substr(dot) != ".metadata" || dot == 2) return false;
  return std::all_of(name.begin() + 2, name.begin() + static_cast<long>(dot),
                     [](char c) { return c >= '0' && c <= '9'; });
}

namespace {

bool known_transform(const std::string& d) { return d == "stream.zstd/1" || d == "stream.zstd"; }

}  // namespace

// Applies DCP transform descriptors (reverse order of application) to `bytes`.
std::string undo_transforms(std::string bytes, const std::vector<std::string>& transforms,
                            uint64_t max_output, const std::string& what) {
  for (auto d = transforms.rbegin(); d != transforms.rend(); ++d) {
    if (!known_transform(*d))
      throw InvalidArgumentError(what + ": transform '" + *d +
                                 "' is unknown (dcp++ reads stream.zstd/1)");
    ZSTD_DStream* z = ZSTD_createDStream();
    std::string out;
    ZSTD_inBuffer in{bytes.data(), bytes.size(), 0};
    std::string buf(ZSTD_DStreamOutSize(), '\0');
    size_t r = 1;
    while (in.pos < in.size || r != 0) {
      ZSTD_outBuffer ob{buf.data(), buf.size(), 0};
      r = ZSTD_decompressStream(z, &ob, &in);
      if (ZSTD_isError(r)) {
        const std::string err = ZSTD_getErrorName(r);
        ZSTD_freeDStream(z);
        throw CorruptionError(what + ": the zstd stream is damaged: " + err);
      }
      out.append(buf.data(), ob.pos);
      if (out.size() > max_output) {
        ZSTD_freeDStream(z);
        throw CorruptionError(what + ": the zstd stream decompresses to more than " +
                              std::to_string(max_output) + " bytes");
      }
      if (in.pos == in.size && ob.pos == 0 && r != 0) {
        ZSTD_freeDStream(z);
        throw CorruptionError(what + ": the zstd stream is truncated");
      }
    }
    ZSTD_freeDStream(z);
    bytes = std::move(out);
  }
  return bytes;
}

namespace {

// The sidecar of `dir` when it belongs to the .metadata whose bytes are
// `pickle` (without its binding item); nullopt when there is none or it is
// another save's. A damaged sidecar is a CorruptionError.
std::optional<Metadata> read_sidecar(Env& env, const std::string& dir, const std::string& display,
                                     const std::string& pickle) {
  const std::string path = join_path(dir, kSidecarName);
  if (!env.file_exists(path)) return std::nullopt;
  const std::string source = "'" + display + "/" + kSidecarName + "'";
  Metadata side = deserialize_metadata(env.read_file(path), source);
  auto b = side.storage_data.find(sidecar_binding_index());
  if (b == side.storage_data.end() || b->second.length != pickle.size() ||
      b->second.checksum_type != ChecksumType::kXXH3_64 ||
      b->second.checksum != xxh3_64(pickle.data(), pickle.size())) {
    logger().warn(
        "{}: ignored: it belongs to another save than '{}/.metadata' (written since by another "
        "program?); the checkpoint is read as PyTorch wrote it, without dcp++'s checksums",
        source, display);
    return std::nullopt;
  }
  side.storage_data.erase(b);
  return side;
}

// A BYTE_IO item dcp++ wrote: one plain value, checked against the sidecar's
// XXH3-64 of the bytes the save planner gave (its plain-value encoding, or
// raw bytes).
ItemSource sidecar_value(const RandomAccessFile& f, const StorageInfo& info,
                         const std::string& what) {
  try {
    TorchArchive archive = open_torch_archive(f, info.offset, info.length, what, true);
    Value v;
    std::string why;
    if (!torch_plain_value(archive.pickle.root(), v, why))
      return UnreadableValue{what + ": " + why, /*corrupt=*/true};
    if (info.checksum_type != ChecksumType::kXXH3_64) return InlineValue{std::move(v)};
    const Bytes encoded = encode_plain_value(v);
    if (xxh3_64(encoded.data.data(), encoded.data.size()) == info.checksum)
      return InlineValue{std::move(v)};
    if (v.kind() == Value::Kind::kBytes) {
      const std::string& b = v.to_bytes().data;
      if (xxh3_64(b.data(), b.size()) == info.checksum) return InlineValue{std::move(v), true};
    }
    char msg[64];
    std::snprintf(msg, sizeof msg, "stored 0x%016llx",
                  static_cast<unsigned long long>(info.checksum));
    return UnreadableValue{what + ": XXH3-64 checksum mismatch (" + msg + ", from " + kSidecarName +
                               "): the value is corrupt",
                           /*corrupt=*/true};
  } catch (const Error& e) {
    return UnreadableValue{e.what(), /*corrupt=*/true};
  }
}

}  // namespace

Catalog pytorch_dcp_catalog(Env& env, const std::string& dir, const std::string& display) {
  std::vector<std::string> md_files;
  if (env.file_exists(join_path(dir, ".metadata"))) {
    md_files.push_back(".metadata");
  } else {
    for (const std::string& name : env.list_dir(dir))
      if (is_rank_metadata_name(name)) md_files.push_back(name);
    std::sort(md_files.begin(), md_files.end(), [](const std::string& a, const std::string& b) {
      return a.size() != b.size() ? a.size() < b.size() : a < b;
    });
    if (md_files.empty())
      throw NotFoundError("'" + display + "' is not a committed checkpoint: it has no .metadata");
  }
  Parsed parsed;
  std::optional<Metadata> side;
  for (const std::string& name : md_files) {
    const std::string bytes = env.read_file(join_path(dir, name));
    parse_metadata_file(bytes, "'" + display + "/" + name + "'", parsed);
    if (md_files.size() == 1 && name == kMetadataFileName)
      side = read_sidecar(env, dir, display, bytes);
  }
  if (side) {
    // The sidecar describes every item the pickle locates, at the same place.
    const std::string source = "'" + display + "/" + kSidecarName + "'";
    for (const auto& [idx, loc] : parsed.locations) {
      auto it = side->storage_data.find(idx);
      if (it == side->storage_data.end() || it->second.relative_path != loc.info.relative_path ||
          it->second.offset != loc.info.offset || it->second.length != loc.info.length)
        throw CorruptionError(source + " and .metadata disagree about item " + to_string(idx));
    }
    if (side->storage_data.size() != parsed.locations.size())
      throw CorruptionError(source + " and .metadata disagree about the items (" +
                            std::to_string(side->storage_data.size()) + " and " +
                            std::to_string(parsed.locations.size()) + ")");
  }

  Catalog cat;
  cat.format = "PyTorch DCP (" + parsed.flavour + ")";
  if (side)
    cat.format +=
        ", written by dcp++ " + side->library_version + " (checksums in " + kSidecarName + ")";
  Metadata& md = cat.metadata;
  md.storage_meta = parsed.storage_meta ? parsed.storage_meta : StorageMeta{display, ""};
  if (side && side->storage_meta) md.storage_meta = side->storage_meta;
  md.storage_meta->checkpoint_id = display;

  // The data files the items name, opened once (and their sizes).
  std::map<std::string, std::unique_ptr<RandomAccessFile>> files;
  auto file = [&](const std::string& rel, const MetadataIndex& idx) -> const RandomAccessFile& {
    auto& f = files[rel];
    if (!f) {
      try {
        f = env.new_random_access_file(join_path(dir, rel));
      } catch (const NotFoundError& e) {
        throw CorruptionError("checkpoint '" + display + "' is missing data file '" + rel +
                              "' (needed for item " + to_string(idx) + ")");
      }
    }
    return *f;
  };
  int world = 1;
  FlattenMapping mapping;
  auto base_path = [&](const std::string& key) {
    auto it = parsed.planner_paths.find(key);
    return it != parsed.planner_paths.end() ? it->second : ObjectPath{PathElement{false, key, 0}};
  };
  auto add_key = [&](const std::string& key, const ObjectPath& path) {
    if (!mapping.emplace(key, path).second)
      throw CorruptionError("'" + display + "': two entries give the key '" + key + "'");
  };

  for (const auto& [idx, loc] : parsed.locations) {
    auto entry = parsed.entries.find(idx.fqn);
    if (entry == parsed.entries.end())
      throw CorruptionError("'" + display + "': storage_data has item " + to_string(idx) +
                            " of a key state_dict_metadata does not have");
    const std::string what = "item " + to_string(idx) + " ('" + display + "/" +
                             loc.info.relative_path + "' bytes [" +
                             std::to_string(loc.info.offset) + ", " +
                             std::to_string(loc.info.offset + loc.info.length) + "))";
    const RandomAccessFile& f = file(loc.info.relative_path, idx);
    if (loc.info.offset > f.size() || loc.info.length > f.size() - loc.info.offset)
      throw CorruptionError(what + " runs past the end of the file (" + std::to_string(f.size()) +
                            " bytes)");
    // __<rank>_<n>.distcp: the ranks that saved.
    const std::string& rel = loc.info.relative_path;
    if (rel.compare(0, 2, "__") == 0) {
      const int r = std::atoi(rel.c_str() + 2);
      if (r >= 0 && r < (1 << 20)) world = std::max(world, r + 1);
    }
    if (std::holds_alternative<TensorStorageMetadata>(entry->second)) {
      auto& t = std::get<TensorStorageMetadata>(entry->second);
      const auto& offset = idx.offset;  // (a lambda may not capture a structured binding in C++17)
      if (std::find_if(t.chunks.begin(), t.chunks.end(), [&](const ChunkStorageMetadata& c) {
            return c.offsets == offset;
          }) == t.chunks.end())
        throw CorruptionError("'" + display + "': " + what + " is no chunk of its tensor");
      ArchiveTensor a{join_path(dir, rel), loc.info.offset, loc.info.length, loc.transforms, {}};
      md.storage_data[idx] = loc.info;
      if (side) {
        const StorageInfo& si = side->storage_data.at(idx);
        md.storage_data[idx] = si;
        if (si.checksum_type == ChecksumType::kXXH3_64) a.xxh3 = si.checksum;
      }
      cat.sources.emplace(idx, std::move(a));
      continue;
    }
    if (side) {
      // One key, as dcp++ saved it.
      const StorageInfo& si = side->storage_data.at(idx);
      md.state_dict_metadata.emplace(idx.fqn, BytesStorageMetadata{});
      md.storage_data[idx] = si;
      cat.sources.emplace(idx, sidecar_value(f, si, what));
      continue;
    }
    // A BYTE_IO item: decoded now; a dict among them flattened.
    const ObjectPath base = base_path(idx.fqn);
    std::vector<TorchLeaf> leaves;
    try {
      std::string bytes(loc.info.length, '\0');
      if (f.read(loc.info.offset, loc.info.length, bytes.data()) != loc.info.length)
        throw CorruptionError(what + " is truncated");
      const bool transformed = !loc.transforms.empty();
      if (transformed)
        bytes = undo_transforms(std::move(bytes), loc.transforms, uint64_t{1} << 31, what);
      if (is_legacy_torch_save(bytes)) {
        leaves.push_back({base, UnreadableValue{what + " is in the legacy torch.save format"}});
      } else {
        std::shared_ptr<RandomAccessFile> held;
        const RandomAccessFile* src = &f;
        uint64_t at = loc.info.offset, len = loc.info.length;
        if (transformed) {
          held = memory_file(std::move(bytes), display + "/" + rel);
          src = held.get();
          at = 0;
          len = held->size();
        }
        TorchArchive archive = open_torch_archive(*src, at, len, what, true);
        leaves = torch_leaves(archive.pickle.root(), base, what);
        for (TorchLeaf& leaf : leaves)
          if (auto* st = std::get_if<StoredTensor>(&leaf.value)) {
            RawTensor raw = raw_tensor(archive, *st, join_path(dir, rel), what);
            raw.held = held;
            const std::string key = path_string(leaf.path);
            add_key(key, leaf.path);
            const StorageInfo info{rel, raw.offset, raw.storage_bytes};
            add_tensor_leaf(cat, key, *st, std::move(raw), info);
          }
      }
    } catch (const py::DisallowedGlobalError& e) {
      leaves.assign(1, {base, UnreadableValue{e.what()}});
    } catch (const Error& e) {
      leaves.assign(1, {base, UnreadableValue{e.what(), /*corrupt=*/true}});
    }
    for (TorchLeaf& leaf : leaves) {
      if (std::holds_alternative<StoredTensor>(leaf.value)) continue;
      const std::string key = path_string(leaf.path);
      add_key(key, leaf.path);
      add_value_leaf(cat, key, leaf, StorageInfo{rel, loc.info.offset, 0});
    }
  }
  // Tensors: every chunk has its item.
  for (const auto& [key, e] : parsed.entries) {
    const auto* t = std::get_if<TensorStorageMetadata>(&e);
    if (!t) continue;
    for (const auto& c : t->chunks)
      if (!md.storage_data.count(MetadataIndex(key, c.offsets)))
        throw CorruptionError("'" + display + "': tensor '" + key + "' has a chunk at " +
                              shape_str(c.offsets) + " that storage_data does not locate");
    add_key(key, base_path(key));
    md.state_dict_metadata.emplace(key, *t);
  }
  for (const auto& [key, e] : parsed.entries)
    if (std::holds_alternative<BytesStorageMetadata>(e) &&
        !parsed.locations.count(MetadataIndex(key)))
      throw CorruptionError("'" + display + "': plain value '" + key +
                            "' has no storage location in storage_data");
  md.world_size = side ? side->world_size : world;
  md.planner_data = side ? side->planner_data : encode_flatten_mapping(mapping);
  return cat;
}

}  // namespace internal
}  // namespace dcp
