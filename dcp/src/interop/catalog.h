// Checkpoints of other formats (PyTorch DCP directories, torch.save files,
// safetensors files and Hugging Face directories) read through dcp++'s own
// load path: each format's reader builds a Catalog, that is dcp++ Metadata
// (so planning, resharding, load_all and the tools work unchanged) plus,
// for every saved item, where its bytes are. CatalogReader is the one
// StorageReader over any Catalog.
//
// Every rank builds the catalog itself from the files (in read_metadata on
// the coordinator, in set_up_storage_reader elsewhere): the metadata load()
// broadcasts carries dcp++'s fields only.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "dcp/env.h"
#include "dcp/filesystem.h"
#include "dcp/metadata.h"
#include "dcp/storage.h"
#include "dcp/value.h"

namespace dcp {
namespace internal {

// A tensor chunk whose elements are stored raw (little-endian) in a file:
// a torch.save record or a safetensors buffer.
struct RawTensor {
  std::string file;            // path in the Env
  uint64_t offset = 0;         // absolute offset of element 0 of the storage
  uint64_t storage_bytes = 0;  // bytes of the storage from `offset` (bounds every read)
  at::ScalarType dtype = at::kFloat;
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;  // in elements; empty: contiguous
  int64_t storage_offset = 0;    // in elements
  // The CRC-32 of the whole zip record that holds the storage, when there is
  // one: [crc_begin, crc_begin + crc_length) of `file`. Checked with
  // verify_checksums (reading the record whole when the read covers less).
  std::optional<uint32_t> crc;
  uint64_t crc_begin = 0, crc_length = 0;
  // The XXH3-64 of the same bytes, when dcp++ wrote the checkpoint and kept
  // its checksums beside it (a PyTorch DCP sidecar): checked instead of the
  // CRC-32, with verify_checksums.
  std::optional<uint64_t> xxh3;
  std::string what;  // names the item in errors ("record 'archive/data/0' of '/m.pt'")
  // When set, the bytes are here (a decompressed item), not in `file`.
  std::shared_ptr<const RandomAccessFile> held;
};

// A PyTorch DCP tensor item: a whole torch.save archive at [offset, offset +
// length) of `file`, opened when it is read; `transforms` are DCP's
// transform_descriptors ("stream.zstd/1"), outermost last.
struct ArchiveTensor {
  std::string file;
  uint64_t offset = 0, length = 0;
  std::vector<std::string> transforms;
  std::optional<uint64_t> xxh3;  // of the tensor's bytes (RawTensor::xxh3)
};

// A plain value known when the catalog was built (torch.save leaves, DCP
// BYTE_IO items).
struct InlineValue {
  Value value;
  // The value is Bytes a save planner gave as they are (not a plain value's
  // encoding): the load planner gets them as they are.
  bool raw = false;
};

// A value dcp++ cannot represent (a Python object of another class, an int
// beyond 64 bits): loading the key is an error saying `why`, unless the load
// skips such keys (LoadOptions::skip_unreadable_values).
struct UnreadableValue {
  std::string why;
  // The bytes are damaged (not merely of a kind dcp++ does not read):
  // loading the key is an error even when the load skips unreadable values.
  bool corrupt = false;
};

using ItemSource = std::variant<RawTensor, ArchiveTensor, InlineValue, UnreadableValue>;

struct Catalog {
  Metadata metadata;
  std::map<MetadataIndex, ItemSource> sources;
  std::string format;  // for messages and `ckpt show`: "PyTorch DCP (1.13)", "torch.save", ...
};

// Builds the catalog of the checkpoint at `path` of `env` (a path in the
// Env; `display` names it in errors).
using CatalogBuilder =
    std::function<Catalog(Env& env, const std::string& path, const std::string& display)>;

// What is at `path`: the catalog builder for it, or nullptr when it is a
// dcp++ checkpoint (or nothing: the native reader gives the error).
struct Detected {
  CatalogBuilder build;
  std::string format;
};
Detected detect_format(Env& env, const std::string& path);

// "__<rank>.metadata": the metadata of one rank of a PyTorch DCP save with
// use_collectives=False.
bool is_rank_metadata_name(const std::string& name);

// Undoes DCP transform descriptors (listed in reverse order of application;
// dcp++ knows stream.zstd/1) on `bytes`; more than `max_output` bytes out is
// an error. `what` names the item in errors.
std::string undo_transforms(std::string bytes, const std::vector<std::string>& transforms,
                            uint64_t max_output, const std::string& what);

// Builders, one per format (dcp/src/interop/*.cpp).
Catalog pytorch_dcp_catalog(Env& env, const std::string& path, const std::string& display);
Catalog torch_save_catalog(Env& env, const std::string& path, const std::string& display);
Catalog safetensors_catalog(Env& env, const std::string& path, const std::string& display);

// The StorageReader over a catalog made by `build`.
std::shared_ptr<StorageReader> new_catalog_reader(Env* env, std::string scheme, std::string path,
                                                  CatalogBuilder build,
                                                  FileSystemReaderOptions options);

}  // namespace internal
}  // namespace dcp
