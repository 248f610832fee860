// The pytorch-dcp storage format: the archives of the items, the .metadata
// pickle and the sidecar (interop/pytorch_dcp_writer.h). The pickle is
// written as interop.md §1.2-1.3 describes 2.x's and 1.13's: every object
// by GLOBAL + EMPTY_TUPLE + NEWOBJ and a BUILD of its state (dataclasses:
// their __dict__; TensorProperties: __getstate__'s 5-tuple with the
// memory-format enum as REDUCE(cls, (0,)); BytesStorageMetadata: no BUILD),
// torch.Size as REDUCE(torch.Size, (tuple,)), dtypes as bare globals,
// the layout as REDUCE(torch.serialization._get_layout, ("torch.strided",)).
#include "interop/pytorch_dcp_writer.h"

#include <algorithm>

#include "dcp/default_planner.h"
#include "dcp/error.h"
#include "dcp/filesystem.h"
#include "interop/pickle.h"
#include "interop/pickle_writer.h"
#include "interop/torch_save_writer.h"
#include "interop/zip_writer.h"
#include "xxh3.h"

namespace dcp {

void check_pytorch_version(const std::string& version) {
  if (version != "2" && version != "1.13")
    throw InvalidArgumentError(
        "the PyTorch version of the pytorch-dcp format must be \"2\" or "
        "\"1.13\", not '" +
        version + "'");
}

namespace internal {

namespace {

using py::PickleWriter;

struct Modules {
  const char* metadata;    // Metadata, TensorStorageMetadata, ..., MetadataIndex
  const char* properties;  // TensorProperties and the memory-format enum
  const char* mem_format;  // the enum's name
  const char* filesystem;  // _StorageInfo
};

constexpr Modules k2Modules{"torch.distributed.checkpoint.metadata",
                            "torch.distributed.checkpoint.metadata", "_MEM_FORMAT_ENCODING",
                            "torch.distributed.checkpoint.filesystem"};
constexpr Modules k113Modules{"torch.distributed._shard.checkpoint.metadata",
                              "torch.distributed._shard.sharded_tensor.metadata",
                              "MEM_FORMAT_ENCODING",
                              "torch.distributed._shard.checkpoint.filesystem"};

// An instance of module.cls made as pickle makes dataclasses: cls.__new__(cls).
void new_object(PickleWriter& w, const char* module, const char* cls) {
  w.global(module, cls);
  w.tuple_of(0);
  w.newobj();
}

void int_tuple(PickleWriter& w, const std::vector<int64_t>& v) {
  if (v.size() <= 3) {
    for (int64_t x : v) w.integer(x);
    w.tuple_of(static_cast<int>(v.size()));
    return;
  }
  w.mark();
  for (int64_t x : v) w.integer(x);
  w.tuple();
}

void torch_size(PickleWriter& w, const std::vector<int64_t>& v) {
  w.global("torch", "Size");
  int_tuple(w, v);
  w.tuple_of(1);
  w.reduce();
}

// Starts a dict state of named fields: build_fields() ends it. Every state
// here has fields, so MARK ... SETITEMS always has items.
void begin_fields(PickleWriter& w) {
  w.empty_dict();
  w.mark();
}
void end_fields(PickleWriter& w) {
  w.setitems();
  w.build();
}

void tensor_properties(PickleWriter& w, const Modules& m, const TensorProperties& p) {
  new_object(w, m.properties, "TensorProperties");
  // __getstate__: (dtype, layout, requires_grad, memory-format enum, pin_memory).
  w.mark();
  w.global("torch", dtype_name(p.dtype));
  w.global("torch.serialization", "_get_layout");
  w.str("torch.strided");
  w.tuple_of(1);
  w.reduce();
  w.boolean(p.requires_grad);
  w.global(m.properties, m.mem_format);
  w.integer(0);  // TORCH_CONTIGUOUS_FORMAT
  w.tuple_of(1);
  w.reduce();
  w.boolean(false);  // pin_memory
  w.tuple();
  w.build();
}

void chunk(PickleWriter& w, const Modules& m, const ChunkStorageMetadata& c) {
  new_object(w, m.metadata, "ChunkStorageMetadata");
  begin_fields(w);
  w.str("offsets");
  torch_size(w, c.offsets);
  w.str("sizes");
  torch_size(w, c.sizes);
  end_fields(w);
}

void entry(PickleWriter& w, const Modules& m, const StorageMetadata& e) {
  const auto* t = std::get_if<TensorStorageMetadata>(&e);
  if (!t) {
    new_object(w, m.metadata, "BytesStorageMetadata");  // no fields: no BUILD
    return;
  }
  new_object(w, m.metadata, "TensorStorageMetadata");
  begin_fields(w);
  w.str("properties");
  tensor_properties(w, m, t->properties);
  w.str("size");
  torch_size(w, t->size);
  w.str("chunks");
  w.empty_list();
  if (!t->chunks.empty()) {
    w.mark();
    for (const auto& c : t->chunks) chunk(w, m, c);
    w.appends();
  }
  end_fields(w);
}

// MetadataIndex.__init__ sets fqn, index, and offset only when given: a
// plain value's key has no offset (None by the class default), a tensor
// chunk's has its offsets as a torch.Size, also the empty one of a 0-d
// tensor (Python looks such a chunk up with offset torch.Size([])).
void metadata_index(PickleWriter& w, const Modules& m, const std::string& fqn,
                    const std::vector<int64_t>* offset, int64_t hint) {
  new_object(w, m.metadata, "MetadataIndex");
  begin_fields(w);
  w.str("fqn");
  w.str(fqn);
  w.str("index");
  if (hint >= 0)
    w.integer(hint);
  else
    w.none();
  if (offset) {
    w.str("offset");
    torch_size(w, *offset);
  }
  end_fields(w);
}

void storage_info(PickleWriter& w, const Modules& m, const StorageInfo& info) {
  new_object(w, m.filesystem, "_StorageInfo");
  begin_fields(w);
  w.str("relative_path");
  w.str(info.relative_path);
  w.str("offset");
  w.integer(static_cast<int64_t>(info.offset));
  w.str("length");
  w.integer(static_cast<int64_t>(info.length));
  end_fields(w);
}

// dcp++'s flattening map (Metadata::planner_data of the default planners);
// empty for anything else (a custom planner's data).
FlattenMapping flatten_mapping_of(const Metadata& md) {
  try {
    return decode_flatten_mapping(md.planner_data);
  } catch (const Error&) {
    return {};
  }
}

// 2.x's planner_data: {flat key: path tuple} for every key.
void planner_data(PickleWriter& w, const Metadata& md) {
  const FlattenMapping mapping = flatten_mapping_of(md);
  w.empty_dict();
  if (md.state_dict_metadata.empty()) return;
  w.mark();
  for (const auto& [key, e] : md.state_dict_metadata) {
    w.str(key);
    auto it = mapping.find(key);
    const ObjectPath path =
        it != mapping.end() && !it->second.empty() ? it->second : ObjectPath{{false, key, 0}};
    if (path.size() > 3) w.mark();
    for (const PathElement& p : path) {
      if (p.is_index)
        w.integer(p.index);
      else
        w.str(p.key);
    }
    if (path.size() > 3)
      w.tuple();
    else
      w.tuple_of(static_cast<int>(path.size()));
  }
  w.setitems();
}

}  // namespace

PyTorchFlavour pytorch_flavour(const std::string& version) {
  check_pytorch_version(version);
  return version == "1.13" ? PyTorchFlavour::k113 : PyTorchFlavour::k2;
}

MetadataIndex sidecar_binding_index() { return MetadataIndex(kMetadataFileName, {-1}); }

void check_pytorch_plan(const SavePlan& plan) {
  for (const WriteItem& item : plan.items) {
    const std::string& key = item.index.fqn;
    if (!py::valid_utf8(key))
      throw InvalidArgumentError(
          "key '" + key +
          "' is not UTF-8 text, which the pytorch-dcp format needs (Python keys are str)");
    if (item.tensor_data)
      torch_storage_class(item.tensor_data->properties.dtype,
                          "key '" + key + "' (pytorch-dcp format)");
  }
}

uint64_t write_tensor_archive(const ByteSink& sink, const void* data, size_t n,
                              at::ScalarType dtype, const std::vector<int64_t>& sizes,
                              size_t piece_bytes, uint64_t* xxh3, const std::string& what) {
  PickleWriter w;
  // Python's DCP saves tensors detached: requires_grad lives in TensorProperties.
  pickle_tensor(w, "0", dtype, sizes, /*requires_grad=*/false, what);
  const std::string pkl = w.finish();
  ZipWriter zip("archive", sink);
  zip.add("data.pkl", pkl);
  zip.add("byteorder", std::string_view("little"));
  zip.begin("data/0", n);
  Xxh3 state;
  const char* p = static_cast<const char*>(data);
  for (size_t done = 0; done < n; done += piece_bytes) {
    const size_t len = std::min(piece_bytes, n - done);
    if (xxh3) state.update(p + done, len);
    zip.append(p + done, len);
  }
  zip.end();
  if (xxh3) *xxh3 = n ? state.digest() : xxh3_64(data, 0);
  return zip.finish();
}

std::string bytes_item_archive(const Bytes& data, const std::string& what) {
  Value v;
  try {
    v = decode_plain_value(data.data, what);
  } catch (const Error&) {
    // Not dcp++'s encoding of a plain value (a custom planner's bytes): as they are.
    return torch_save_value(Value(data), what);
  }
  return torch_save_value(v, what);
}

std::string pytorch_metadata_pickle(const Metadata& md, PyTorchFlavour flavour,
                                    const std::string& checkpoint_id, const std::string& save_id) {
  const Modules& m = flavour == PyTorchFlavour::k2 ? k2Modules : k113Modules;
  PickleWriter w;
  new_object(w, m.metadata, "Metadata");
  begin_fields(w);

  w.str("state_dict_metadata");
  w.empty_dict();
  if (!md.state_dict_metadata.empty()) {
    w.mark();
    for (const auto& [key, e] : md.state_dict_metadata) {
      w.str(key);
      entry(w, m, e);
    }
    w.setitems();
  }

  w.str("planner_data");
  if (flavour == PyTorchFlavour::k2)
    planner_data(w, md);
  else
    w.none();

  // Each key is built whole (NEWOBJ + BUILD) before SETITEMS hashes it.
  w.str("storage_data");
  w.empty_dict();
  if (!md.storage_data.empty()) {
    w.mark();
    for (const auto& [index, info] : md.storage_data) {
      auto e = md.state_dict_metadata.find(index.fqn);
      const auto* t = e == md.state_dict_metadata.end()
                          ? nullptr
                          : std::get_if<TensorStorageMetadata>(&e->second);
      int64_t hint = -1;
      if (t)
        for (size_t i = 0; i < t->chunks.size(); ++i)
          if (t->chunks[i].offsets == index.offset) hint = static_cast<int64_t>(i);
      metadata_index(w, m, index.fqn, t ? &index.offset : nullptr, hint);
      storage_info(w, m, info);
    }
    w.setitems();
  }

  if (flavour == PyTorchFlavour::k2) {
    // checkpoint_id as a str (2.x writes a PosixPath, which CPython 3.13
    // pickles as pathlib._local.PosixPath, unknown to older Pythons).
    w.str("storage_meta");
    new_object(w, m.metadata, "StorageMeta");
    begin_fields(w);
    w.str("checkpoint_id");
    w.str(checkpoint_id);
    w.str("save_id");
    w.str(save_id);
    w.str("load_id");
    w.none();
    w.str("modules");
    w.empty_list();
    end_fields(w);
    // CURRENT_DCP_VERSION of 2.x's filesystem.py; a reader without the field
    // (2.4) keeps it as an attribute.
    w.str("version");
    w.str("1.0.0");
  }
  end_fields(w);
  return w.finish();
}

std::string pytorch_sidecar(const Metadata& md, const std::string& pickle) {
  Metadata side = md;
  side.storage_data[sidecar_binding_index()] =
      StorageInfo{kMetadataFileName, 0, pickle.size(), ChecksumType::kXXH3_64,
                  xxh3_64(pickle.data(), pickle.size())};
  return serialize_metadata(side);
}

}  // namespace internal
}  // namespace dcp
