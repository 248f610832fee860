// Checkpoint metadata: DCP's model of what a checkpoint holds and where.
//
// For every key of the (flattened) state dict: either a tensor (properties,
// global size, and the chunks that were saved, each with offsets and sizes)
// or a bytes entry. For every saved item (a MetadataIndex: key + chunk
// offsets), where its bytes live (StorageInfo: file, offset, length, checksum).
//
// The metadata is serialized in a versioned, checksummed binary format (see
// docs/FORMAT.md). Reading it never executes anything: no pickle.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "dcp/export.h"

namespace dcp {

// The metadata format this build writes. A reader accepts every version up
// to this one and refuses newer ones with a clear error.
constexpr uint32_t kFormatVersion = 1;

// The name of the metadata file in a file-system checkpoint; its appearance
// (by atomic rename) is the commit point of a save.
constexpr const char* kMetadataFileName = ".metadata";

struct DCP_CORE_EXPORT TensorProperties {
  at::ScalarType dtype = at::kFloat;
  bool requires_grad = false;
  bool operator==(const TensorProperties& o) const {
    return dtype == o.dtype && requires_grad == o.requires_grad;
  }
};

// A box of a tensor: `sizes` elements from `offsets` in each dimension.
struct DCP_CORE_EXPORT ChunkStorageMetadata {
  std::vector<int64_t> offsets;
  std::vector<int64_t> sizes;
  bool operator==(const ChunkStorageMetadata& o) const {
    return offsets == o.offsets && sizes == o.sizes;
  }
};

struct DCP_CORE_EXPORT TensorStorageMetadata {
  TensorProperties properties;
  std::vector<int64_t> size;  // the global size
  std::vector<ChunkStorageMetadata> chunks;
};

struct DCP_CORE_EXPORT BytesStorageMetadata {};

using StorageMetadata = std::variant<TensorStorageMetadata, BytesStorageMetadata>;

// Names one saved item: a key, and for tensors the offsets of the chunk.
// `index` is a lookup hint only: it takes no part in comparisons.
struct DCP_CORE_EXPORT MetadataIndex {
  std::string fqn;
  std::vector<int64_t> offset;
  int64_t index = -1;

  MetadataIndex() = default;
  explicit MetadataIndex(std::string f, std::vector<int64_t> off = {}, int64_t idx = -1)
      : fqn(std::move(f)), offset(std::move(off)), index(idx) {}
  bool operator==(const MetadataIndex& o) const { return fqn == o.fqn && offset == o.offset; }
  bool operator!=(const MetadataIndex& o) const { return !(*this == o); }
  bool operator<(const MetadataIndex& o) const {
    const int c = fqn.compare(o.fqn);
    return c != 0 ? c < 0 : offset < o.offset;
  }
};

DCP_CORE_EXPORT std::string to_string(const MetadataIndex& index);

enum class ChecksumType : uint8_t { kNone = 0, kXXH3_64 = 1 };

// Where one item's bytes live.
struct DCP_CORE_EXPORT StorageInfo {
  std::string relative_path;  // file name inside the checkpoint
  uint64_t offset = 0;        // byte offset inside that file
  uint64_t length = 0;        // number of bytes
  ChecksumType checksum_type = ChecksumType::kNone;
  uint64_t checksum = 0;
  bool operator==(const StorageInfo& o) const {
    return relative_path == o.relative_path && offset == o.offset && length == o.length &&
           checksum_type == o.checksum_type && checksum == o.checksum;
  }
};

// Storage-specific facts recorded with the checkpoint.
struct DCP_CORE_EXPORT StorageMeta {
  std::string checkpoint_id;  // e.g. the directory the checkpoint was written to
  std::string save_id;        // unique per save: tells two saves to the same place apart
};

struct DCP_CORE_EXPORT Metadata {
  uint32_t version = kFormatVersion;
  std::map<std::string, StorageMetadata> state_dict_metadata;
  std::map<MetadataIndex, StorageInfo> storage_data;
  // Opaque to storage; the default planners keep the flattening map here
  // (flat key -> original nested path) so load can rebuild nested dicts.
  std::string planner_data;
  std::optional<StorageMeta> storage_meta;
  int32_t world_size = 1;       // ranks that saved the checkpoint
  std::string library_version;  // dcp++ version that wrote it

  // Total bytes of all items.
  uint64_t total_bytes() const;
};

// Encodes `metadata` in the binary format: a fixed header (magic, format
// version, body length, XXH3 checksum of the body) and the body.
DCP_CORE_EXPORT std::string serialize_metadata(const Metadata& metadata);

// Decodes bytes written by serialize_metadata. Throws CorruptionError naming
// `source` (a path, for errors) for a bad magic, a wrong length, a checksum
// mismatch or a malformed body, and InvalidArgumentError for a format version
// newer than kFormatVersion.
DCP_CORE_EXPORT Metadata deserialize_metadata(std::string_view bytes, const std::string& source);

// Stable names of dtypes as stored in metadata ("float32", "bfloat16", ...).
DCP_CORE_EXPORT const char* dtype_name(at::ScalarType dtype);
// The inverse; throws InvalidArgumentError for an unknown name.
DCP_CORE_EXPORT at::ScalarType dtype_from_name(std::string_view name);
// Throws InvalidArgumentError when dcp++ cannot save tensors of `dtype`
// (quantized types); `what` names the key.
DCP_CORE_EXPORT void check_supported_dtype(at::ScalarType dtype, const std::string& what);

}  // namespace dcp
