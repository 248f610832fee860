// The planner protocol, as in PyTorch DCP (torch/distributed/checkpoint/planner.py).
//
// A SavePlanner turns a state dict into WriteItems and resolves each item to
// its data; a LoadPlanner turns a destination state dict and the checkpoint's
// metadata into ReadItems and receives the data. Both are stateful objects
// driven by save()/load() in a fixed call sequence (below). Most users extend
// DefaultSavePlanner / DefaultLoadPlanner (default_planner.h) and override a
// single method.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "dcp/export.h"
#include "dcp/metadata.h"
#include "dcp/value.h"

namespace dcp {

enum class WriteItemType : uint8_t { kTensor = 0, kShard = 1, kByteIO = 2 };
enum class LoadItemType : uint8_t { kTensor = 0, kByteIO = 1 };

DCP_CORE_EXPORT const char* to_string(WriteItemType type);

struct DCP_CORE_EXPORT TensorWriteData {
  ChunkStorageMetadata chunk;  // the box this item covers
  TensorProperties properties;
  std::vector<int64_t> size;  // the global size of the tensor
};

// What one rank writes for one item.
struct DCP_CORE_EXPORT WriteItem {
  MetadataIndex index;
  WriteItemType type = WriteItemType::kTensor;
  std::optional<TensorWriteData> tensor_data;  // set for kTensor and kShard

  // Bytes of the chunk when stored (numel x element size), nullopt for kByteIO.
  std::optional<int64_t> tensor_storage_size() const;
};

// What one rank reads for one item: the box `lengths` from `storage_offsets`
// in the saved chunk `storage_index` goes to `dest_offsets` in `dest_index`.
struct DCP_CORE_EXPORT ReadItem {
  LoadItemType type = LoadItemType::kTensor;
  MetadataIndex dest_index;
  std::vector<int64_t> dest_offsets;
  MetadataIndex storage_index;
  std::vector<int64_t> storage_offsets;
  std::vector<int64_t> lengths;
};

// storage_data and planner_data are opaque bytes so that plans can travel
// between ranks; their meaning belongs to the storage and the planner.
struct DCP_CORE_EXPORT SavePlan {
  std::vector<WriteItem> items;
  std::string storage_data;
  std::string planner_data;
  bool usable = true;
};

struct DCP_CORE_EXPORT LoadPlan {
  std::vector<ReadItem> items;
  std::string storage_data;
  std::string planner_data;
};

// The data of one write item: a tensor (any device, strides or view; storage
// writes its logical contents) or bytes.
using WriteData = std::variant<at::Tensor, Bytes>;

struct WriteResult;

// One rank's copy of a replicated item, for the replica check
// (dcp/replicas.h): the XXH3-64 checksum of its bytes as storage writes them.
struct DCP_CORE_EXPORT ReplicaDigest {
  MetadataIndex index;
  uint64_t digest = 0;
  bool written = false;  // this rank's copy is the one written
};

// Plans the save of a state dict. Call sequence on every rank:
//   1. set_up_planner(state_dict, storage_meta, is_coordinator)
//   2. create_local_plan()            -> this rank's plan
//   3. create_global_plan(all plans)  -> coordinator only: final plans + Metadata
//   4. finish_plan(this rank's final plan)
//   5. resolve_data(item), for each item, from storage worker threads.
class DCP_CORE_EXPORT SavePlanner {
 public:
  virtual ~SavePlanner() = default;
  SavePlanner() = default;
  SavePlanner(const SavePlanner&) = delete;
  SavePlanner& operator=(const SavePlanner&) = delete;

  // `state_dict` holds no Stateful objects (save() has resolved them) and
  // stays alive and unchanged until the save returns.
  virtual void set_up_planner(const StateDict& state_dict,
                              const std::optional<StorageMeta>& storage_meta,
                              bool is_coordinator) = 0;
  virtual SavePlan create_local_plan() = 0;
  // Throws on inconsistent plans (e.g. the same key with different dtypes).
  virtual std::pair<std::vector<SavePlan>, Metadata> create_global_plan(
      std::vector<SavePlan> all_plans) = 0;
  virtual SavePlan finish_plan(SavePlan central_plan) = 0;
  // Thread-safe and idempotent: storage may call it from several threads and
  // more than once per item. Allocating transformations belong here (lazily).
  virtual WriteData resolve_data(const WriteItem& item) = 0;

  // The replica check (dcp/replicas.h), which DCP does not have; the
  // defaults do nothing. On every rank after write_data: the digests of the
  // copies of replicated items that the global plan asked this rank for
  // (`written`: this rank's results, whose checksums may serve).
  virtual std::vector<ReplicaDigest> replica_digests(const std::vector<WriteResult>& written);
  // On the coordinator, before the metadata is written: every rank's
  // digests (index = rank). Throwing fails the save: nothing commits.
  virtual void check_replicas(const std::vector<std::vector<ReplicaDigest>>& all);
};

// Plans the load into a destination state dict. Call sequence on every rank:
//   1. set_up_planner(state_dict, metadata, is_coordinator)
//   2. create_local_plan()
//   3. create_global_plan(all plans)  -> coordinator only
//   4. finish_plan(this rank's final plan)
//   5. load_bytes(item, bytes) for each bytes item; resolve_tensor(item) and
//      commit_tensor(item, tensor) in pairs for each tensor item (each
//      resolved tensor is committed once, none is asked for twice).
// resolve_tensor/commit_tensor may be called concurrently for different items,
// and storage may resolve several items (the small items of one read
// request) before it fills and commits them: a tensor resolve_tensor gives
// must be memory of its own (or the destination's) until its commit_tensor,
// not a scratch buffer reused for the next item. load_bytes is never called
// concurrently with itself.
class DCP_CORE_EXPORT LoadPlanner {
 public:
  virtual ~LoadPlanner() = default;
  LoadPlanner() = default;
  LoadPlanner(const LoadPlanner&) = delete;
  LoadPlanner& operator=(const LoadPlanner&) = delete;

  // `state_dict` holds no Stateful objects (load() has resolved them); the
  // planner loads into it in place.
  virtual void set_up_planner(StateDict& state_dict, const Metadata& metadata,
                              bool is_coordinator) = 0;
  virtual LoadPlan create_local_plan() = 0;
  virtual std::vector<LoadPlan> create_global_plan(std::vector<LoadPlan> all_plans) = 0;
  virtual LoadPlan finish_plan(LoadPlan central_plan) = 0;
  virtual void load_bytes(const ReadItem& item, const Bytes& value) = 0;
  // The tensor (shape `item.lengths`, dtype of the saved tensor) that storage
  // fills with the item's data; it may be a view of the destination.
  virtual at::Tensor resolve_tensor(const ReadItem& item) = 0;
  // Called once `tensor` (from resolve_tensor) holds the data.
  virtual void commit_tensor(const ReadItem& item, at::Tensor& tensor) = 0;
};

}  // namespace dcp
