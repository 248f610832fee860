// The default planners: what save() and load() use unless told otherwise.
// Subclass them and override one method to change one thing (see the
// rename and float16 planners in tests/dcp/planner_test.cpp).
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "dcp/export.h"
#include "dcp/planner.h"
#include "dcp/replicas.h"

namespace dcp {

// One step of the path from the top of a nested state dict to a leaf: a dict
// key or a list index.
struct DCP_CORE_EXPORT PathElement {
  bool is_index = false;
  std::string key;
  int64_t index = 0;
  bool operator==(const PathElement& o) const {
    return is_index == o.is_index && key == o.key && index == o.index;
  }
};
using ObjectPath = std::vector<PathElement>;

// The flattening map: flat key -> path in the original nested state dict.
using FlattenMapping = std::map<std::string, ObjectPath>;

// Flattens nested dicts (and lists that hold tensors) to dotted keys:
// {"model": {"w": t}} -> {"model.w": t}. Lists of plain values, empty dicts
// and every non-container value are leaves. Throws InvalidArgumentError when
// two paths give the same flat key or when a Stateful object is found.
DCP_CORE_EXPORT std::pair<Dict, FlattenMapping> flatten_state_dict(const StateDict& state_dict);

// Rebuilds the nested state dict from flat values and the mapping.
DCP_CORE_EXPORT StateDict unflatten_state_dict(const Dict& flat, const FlattenMapping& mapping);

// The mapping as stored in Metadata::planner_data by DefaultSavePlanner.
DCP_CORE_EXPORT std::string encode_flatten_mapping(const FlattenMapping& mapping);
DCP_CORE_EXPORT FlattenMapping decode_flatten_mapping(std::string_view bytes);

// Plain values (none, bool, int, double, string, bytes, and lists/dicts of
// them) as stored in BYTE_IO items: a small tagged binary encoding
// (docs/FORMAT.md). decode throws CorruptionError on malformed input.
DCP_CORE_EXPORT Bytes encode_plain_value(const Value& value);
DCP_CORE_EXPORT Value decode_plain_value(std::string_view bytes, const std::string& what);

struct DCP_CORE_EXPORT SavePlannerOptions {
  // Flatten nested dicts to dotted keys (and record the mapping). Default on;
  // off requires a flat state dict.
  bool flatten_state_dict = true;
  // A tensor or value saved under the same key (and chunk) by several ranks
  // is written once. Default on.
  bool dedup_replicated = true;
  // Which rank writes a replicated item: false (default) spreads them to
  // balance bytes per rank; true always picks the lowest rank holding it.
  bool dedup_to_lowest_rank = false;
  // Copies of a replicated item that differ between ranks (dcp/replicas.h):
  // an error by default.
  ReplicaCheck check_replicas = ReplicaCheck::kError;
};

// What the global plan asks of one rank for the replica check: the digest
// of its copy of a replicated item, the one it writes (`written`; only the
// index is sent, and the write result's checksum serves when storage has
// one) or one dedup dropped from its plan (the whole item, to resolve).
struct DCP_CORE_EXPORT ReplicaRequest {
  WriteItem item;
  bool written = false;
};

class DCP_CORE_EXPORT DefaultSavePlanner : public SavePlanner {
 public:
  explicit DefaultSavePlanner(SavePlannerOptions options = {});

  void set_up_planner(const StateDict& state_dict, const std::optional<StorageMeta>& storage_meta,
                      bool is_coordinator) override;
  SavePlan create_local_plan() override;
  std::pair<std::vector<SavePlan>, Metadata> create_global_plan(
      std::vector<SavePlan> all_plans) override;
  SavePlan finish_plan(SavePlan central_plan) override;
  WriteData resolve_data(const WriteItem& item) override;
  std::vector<ReplicaDigest> replica_digests(const std::vector<WriteResult>& written) override;
  void check_replicas(const std::vector<std::vector<ReplicaDigest>>& all) override;

 protected:
  // Keeps each item saved by several ranks in one rank's plan only. Returns,
  // per rank, what the replica check asks of it (nothing when it is off).
  std::vector<std::vector<ReplicaRequest>> dedup(std::vector<SavePlan>& all_plans) const;

  // The value (tensor, sharded tensor or plain value) behind `index`; for a
  // shard, the shard's tensor. Throws InvalidArgumentError when absent.
  Value lookup_object(const MetadataIndex& index) const;

  // The flattened state dict (tensor handles alias the caller's): the very
  // dict save() passed when nothing in it is nested (it lives until save()
  // returns), else a flattened copy; a dict handed to set_up_planner() by
  // anyone else (a subclass's renamed copy) is copied. To plan another dict,
  // override set_up_planner() and pass it on. save()'s own dict is the
  // planner's only while that save runs: after it returns, flat(),
  // lookup_object() and resolve_data() are not to be used until the next
  // set_up_planner().
  const Dict& flat() const { return *flat_; }

  const SavePlannerOptions options_;
  FlattenMapping mapping_;
  std::optional<StorageMeta> storage_meta_;
  bool is_coordinator_ = false;
  // This rank's part of the replica check, from its final plan.
  std::vector<ReplicaRequest> replica_requests_;

 private:
  // flat() by key, for resolve_data()'s lookups (a tree search per item
  // costs ~1 us at 20,000 keys: a cache miss a level); made by
  // create_local_plan(), or else by finish_plan().
  std::unordered_map<std::string_view, const Value*> by_key_;
  const Dict* flat_ = &owned_flat_;
  Dict owned_flat_;
};

// A rule of the key mapping of a load: a checkpoint key that starts with
// `from` is loaded into the destination key `to` + the rest of it. An empty
// `from` adds a prefix ({"", "model."}: "fc1.weight" -> "model.fc1.weight"),
// an empty `to` strips one ({"module.", ""}, as DDP names parameters), and
// both replace one. Plain string prefixes: include the dot.
struct DCP_CORE_EXPORT KeyRename {
  std::string from;
  std::string to;
};

// The destination name of checkpoint key `key`: the first rule whose `from`
// starts it applies; without one, `key` itself.
DCP_CORE_EXPORT std::string renamed_key(const std::string& key,
                                        const std::vector<KeyRename>& rename);

struct DCP_CORE_EXPORT LoadPlannerOptions {
  // Missing keys (wanted, not in the checkpoint) and unexpected keys (in the
  // checkpoint, not wanted) are an error listing them. When false they are
  // skipped and reported by missing_keys() / unexpected_keys(). With several
  // ranks a key is unexpected only when no rank's state dict holds (or
  // excludes) it: ranks may load disjoint parts of a checkpoint. Missing keys
  // are each rank's own. The coordinator's global plan decides, so every rank
  // fails with the same error (and is strict when any rank is).
  bool strict = true;
  // Load a tensor saved with another dtype by converting it. Default off: a
  // dtype mismatch is an error naming the key.
  bool allow_dtype_conversion = false;
  // Keys neither loaded nor reported as missing or unexpected: a flat key
  // ("model.fc1.weight") or a prefix of flat keys ("rng" covers "rng.cpu").
  // The destination keeps its values for them. Names destination keys:
  // applied after `rename`.
  std::vector<std::string> exclude;
  // Maps checkpoint names onto the destination's (see KeyRename), for
  // checkpoints whose names differ from the state dict's (a Python module's,
  // a DDP "module." prefix, a torch.save file with no prefix). Two
  // checkpoint keys that map to one name are an error.
  std::vector<KeyRename> rename;
};

// True when `key` is one of `patterns` or lies below one ("a" covers "a.b").
DCP_CORE_EXPORT bool key_matches(const std::string& key, const std::vector<std::string>& patterns);

class DCP_CORE_EXPORT DefaultLoadPlanner : public LoadPlanner {
 public:
  explicit DefaultLoadPlanner(LoadPlannerOptions options = {});

  void set_up_planner(StateDict& state_dict, const Metadata& metadata,
                      bool is_coordinator) override;
  LoadPlan create_local_plan() override;
  std::vector<LoadPlan> create_global_plan(std::vector<LoadPlan> all_plans) override;
  LoadPlan finish_plan(LoadPlan central_plan) override;
  void load_bytes(const ReadItem& item, const Bytes& value) override;
  at::Tensor resolve_tensor(const ReadItem& item) override;
  void commit_tensor(const ReadItem& item, at::Tensor& tensor) override;

  // Keys of this rank's destination absent from the checkpoint (after
  // create_local_plan), and keys of the checkpoint no rank's destination
  // holds (after finish_plan: the same list on every rank; this rank's
  // alone when a subclass's global plan did not decide).
  const std::vector<std::string>& missing_keys() const { return missing_; }
  const std::vector<std::string>& unexpected_keys() const { return unexpected_; }

 protected:
  // Appends the reads of tensor `key` into `dest` from the saved chunks
  // that share elements with each destination box (none for an empty box),
  // or a problem naming the key.
  void plan_tensor(const std::string& key, const Value& dest, const TensorStorageMetadata& saved,
                   LoadPlan& plan, std::vector<std::string>& problems);

  // The destination tensor region an item loads into (a view of the
  // destination, in the destination's dtype).
  at::Tensor destination_view(const ReadItem& item) const;

  // The checkpoint key that loads into destination key `key` (itself
  // without renames); nullptr when there is none.
  const std::string* checkpoint_key(const std::string& key) const;

  const LoadPlannerOptions options_;
  // Flat key -> the leaf Value inside the caller's state dict (in place).
  std::map<std::string, Value*> flat_;
  const Metadata* metadata_ = nullptr;
  bool is_coordinator_ = false;
  std::vector<std::string> missing_, unexpected_;
  // Keys whose saved dtype differs from the destination (with
  // allow_dtype_conversion): resolve_tensor hands out a temporary.
  std::map<std::string, at::ScalarType> converted_;
  // With renames: destination key -> checkpoint key, and each checkpoint
  // key's destination name (in the metadata's key order).
  std::map<std::string, std::string> from_checkpoint_;
  std::vector<std::string> renamed_;

 private:
  // The destination Value of `index` (by_key_, else flat_); throws
  // InvalidArgumentError when there is none.
  Value* destination(const MetadataIndex& index) const;

  // flat_ by key, made by finish_plan() for the reads' lookups (a tree
  // search per item costs ~1 us at 20,000 keys). It holds views of flat_'s
  // keys: a subclass that changes flat_ after finish_plan() must call
  // finish_plan() again (a key added is found by a search, but one erased or
  // replaced would dangle).
  std::unordered_map<std::string_view, Value*> by_key_;
};

// A state dict with freshly allocated tensors (full global size, saved dtype)
// and placeholders for plain values, nested as saved: the template for
// loading a checkpoint without one of your own.
DCP_CORE_EXPORT StateDict state_dict_from_metadata(const Metadata& metadata);
// The same under a key mapping (LoadPlannerOptions::rename): the keys are
// the destination names, nested where a rule's prefixes fall on the path's
// dots; `drop` names (destination) keys to leave out.
DCP_CORE_EXPORT StateDict state_dict_from_metadata(const Metadata& metadata,
                                                   const std::vector<KeyRename>& rename,
                                                   const std::vector<std::string>& drop = {});

}  // namespace dcp
