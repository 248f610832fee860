#include "dcp/default_planner.h"

#include <spdlog/spdlog.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <bitset>
#include <cstring>
#include <set>
#include <unordered_map>
#include <utility>

#include "chunk_validation.h"
#include "codec.h"
#include "dcp/error.h"
#include "dcp/logging.h"
#include "resolve.h"
#include "save_metadata.h"
#include "walk.h"
#include "wire.h"

namespace dcp {

using namespace internal;

// ---------------------------------------------------------------------------
// Local save plan checks

namespace {

TensorProperties properties_of(const at::Tensor& t) {
  return TensorProperties{t.scalar_type(), t.requires_grad()};
}

void check_saveable(const at::Tensor& t, const std::string& key) {
  if (!t.defined()) throw InvalidArgumentError("key '" + key + "': tensor is undefined");
  if (t.layout() != at::kStrided)
    throw InvalidArgumentError("key '" + key + "': only strided (dense) tensors can be saved");
  thread_local std::bitset<256> supported;  // dtypes already checked (no message built per item)
  const auto dtype = static_cast<uint8_t>(t.scalar_type());
  if (!supported[dtype]) {
    check_supported_dtype(t.scalar_type(), "key '" + key + "'");
    supported.set(dtype);
  }
}

bool same_bytes(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.cpu().contiguous(), y = b.cpu().contiguous();
  return x.nbytes() == y.nbytes() &&
         (x.nbytes() == 0 || std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) == 0);
}

// The shards of `st` to plan, in their order. A shard given twice (same
// offsets, shape and dtype: a replica this rank holds twice) is planned
// once, its copies compared as `check` says; two shards that start at the
// same offsets otherwise are refused (the offsets name the stored item).
std::vector<const Shard*> distinct_shards(const std::string& key, const ShardedTensor& st,
                                          ReplicaCheck check) {
  const auto& shards = st.local_shards;
  std::vector<const Shard*> sorted;
  for (const Shard& s : shards) sorted.push_back(&s);
  if (sorted.size() < 2) return sorted;
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const Shard* a, const Shard* b) { return a->offsets < b->offsets; });
  std::vector<char> copy(shards.size(), 0);
  for (size_t i = 1, first = 0; i < sorted.size(); ++i) {
    const at::Tensor &a = sorted[first]->tensor, &b = sorted[i]->tensor;
    if (sorted[i]->offsets != sorted[first]->offsets || !a.defined() || !b.defined()) {
      first = i;  // (an undefined tensor is check_saveable's to report)
      continue;
    }
    const std::string where =
        "key '" + key + "': two local shards start at " + shape_str(sorted[i]->offsets);
    if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type())
      throw InvalidArgumentError(where + ", of " + describe(Value(a)) + " and " +
                                 describe(Value(b)));
    if (check != ReplicaCheck::kOff && !same_bytes(a, b)) {
      if (check == ReplicaCheck::kError)
        throw InvalidArgumentError(where + " and hold different values");
      logger().warn("{} and hold different values; the first is saved", where);
    }
    copy[sorted[i] - shards.data()] = 1;
  }
  std::vector<const Shard*> out;
  for (size_t i = 0; i < shards.size(); ++i)
    if (!copy[i]) out.push_back(&shards[i]);
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------
// DefaultSavePlanner

DefaultSavePlanner::DefaultSavePlanner(SavePlannerOptions options) : options_(options) {}

void DefaultSavePlanner::set_up_planner(const StateDict& state_dict,
                                        const std::optional<StorageMeta>& storage_meta,
                                        bool is_coordinator) {
  // Nothing nested (the common case at scale): the flat dict is the state
  // dict. The one save() is planning lives until it returns and is used as
  // it is (copying it costs ~0.5 us a key: its nodes lie scattered between
  // the tensors' memory, a cache miss each); any other is copied.
  owned_flat_.clear();
  flat_ = &owned_flat_;
  mapping_.clear();
  by_key_.clear();
  const bool lent = SavedStateDict::is(state_dict);
  const bool nested = !SavedStateDict::is_flat(state_dict) &&
                      std::any_of(state_dict.begin(), state_dict.end(),
                                  [](const auto& kv) { return is_nested(kv.second); });
  if (options_.flatten_state_dict && nested) {
    std::tie(owned_flat_, mapping_) = flatten_state_dict(state_dict);
  } else if (lent) {
    flat_ = &state_dict;
  } else {
    for (const auto& kv : state_dict) owned_flat_.emplace_hint(owned_flat_.end(), kv);
  }
  storage_meta_ = storage_meta;
  is_coordinator_ = is_coordinator;
}

SavePlan DefaultSavePlanner::create_local_plan() {
  SavePlan plan;
  plan.items.reserve(flat().size());
  // resolve_data()'s index, made in this pass, while the nodes are in cache.
  by_key_.clear();
  by_key_.reserve(flat().size());
  for (const auto& [key, v] : flat()) {
    by_key_.emplace(key, &v);
    if (v.is_tensor()) {
      const at::Tensor& t = v.tensor();
      check_saveable(t, key);
      WriteItem& item = plan.items.emplace_back();
      item.type = WriteItemType::kTensor;
      item.tensor_data.emplace();
      TensorWriteData& td = *item.tensor_data;
      td.size = t.sizes().vec();
      td.chunk.sizes = td.size;
      td.chunk.offsets.assign(td.size.size(), 0);
      td.properties = properties_of(t);
      item.index.fqn = key;
      item.index.offset = td.chunk.offsets;
    } else if (v.is_sharded()) {
      const ShardedTensor& st = v.sharded();
      for (const Shard* shard : distinct_shards(key, st, options_.check_replicas)) {
        const Shard& s = *shard;
        check_saveable(s.tensor, key);
        if (s.offsets.size() != st.global_size.size() ||
            static_cast<size_t>(s.tensor.dim()) != st.global_size.size())
          throw InvalidArgumentError("key '" + key + "': shard at " + shape_str(s.offsets) +
                                     " with shape " + shape_str(s.tensor.sizes().vec()) +
                                     " does not match the global shape " +
                                     shape_str(st.global_size));
        WriteItem item;
        item.index = MetadataIndex(key, s.offsets);
        item.type = WriteItemType::kShard;
        item.tensor_data = TensorWriteData{ChunkStorageMetadata{s.offsets, s.tensor.sizes().vec()},
                                           properties_of(s.tensor), st.global_size};
        plan.items.push_back(std::move(item));
      }
    } else {
      if (contains_tensor(v))
        throw InvalidArgumentError("key '" + key + "': nested containers with tensors need " +
                                   "flatten_state_dict");
      WriteItem item;
      item.index = MetadataIndex(key);
      item.type = WriteItemType::kByteIO;
      plan.items.push_back(std::move(item));
    }
  }
  plan.planner_data = encode_flatten_mapping(mapping_);
  return plan;
}

std::pair<std::vector<SavePlan>, Metadata> DefaultSavePlanner::create_global_plan(
    std::vector<SavePlan> all_plans) {
  std::vector<std::vector<ReplicaRequest>> requests;
  if (options_.dedup_replicated && all_plans.size() > 1) requests = dedup(all_plans);
  Metadata md = global_metadata(all_plans, options_.dedup_replicated, storage_meta_);
  // A final plan's planner_data is what the replica check asks of its rank
  // (the flattening maps are in the metadata now).
  for (size_t r = 0; r < all_plans.size(); ++r)
    all_plans[r].planner_data = r < requests.size() ? wire::encode(requests[r]) : std::string();
  return {std::move(all_plans), std::move(md)};
}

Metadata internal::global_metadata(const std::vector<SavePlan>& all_plans, bool dedup_replicated,
                                   const std::optional<StorageMeta>& storage_meta) {
  const size_t world = all_plans.size();
  Metadata md;
  md.world_size = static_cast<int32_t>(world);
  md.storage_meta = storage_meta;
  // The first rank that has `key`, for error messages.
  auto first_rank = [&](const std::string& key) {
    for (size_t r = 0; r < world; ++r)
      for (const auto& item : all_plans[r].items)
        if (item.index.fqn == key) return std::to_string(r);
    return std::string("?");
  };
  auto& entries = md.state_dict_metadata;
  for (size_t r = 0; r < world; ++r) {
    // Plans list keys in order: the entry of the previous item (more shards
    // of one key) or the one after it (a key an earlier rank has: the usual
    // case) is found without a search or an allocation; a new key past the
    // last one is appended; anything else is looked up.
    auto hint = entries.end(), last = entries.end();
    for (const auto& item : all_plans[r].items) {
      check_write_item(item, r);
      const std::string& key = item.index.fqn;
      const bool is_bytes = item.type == WriteItemType::kByteIO;
      auto it = hint;
      bool fresh = false;
      if (last != entries.end() && last->first == key) {
        it = last;
      } else if (it == entries.end() || it->first != key) {
        it = entries.empty() || std::prev(entries.end())->first < key ? entries.end()
                                                                      : entries.lower_bound(key);
        if (it == entries.end() || it->first != key) {
          fresh = true;
          if (is_bytes) {
            it = entries.emplace_hint(it, key, BytesStorageMetadata{});
          } else {
            it = entries.emplace_hint(
                it, key,
                TensorStorageMetadata{item.tensor_data->properties, item.tensor_data->size, {}});
          }
        }
      }
      last = it;
      hint = std::next(it);
      if (is_bytes) {
        if (!std::holds_alternative<BytesStorageMetadata>(it->second))
          throw InvalidArgumentError("key '" + key + "' is a tensor on rank " + first_rank(key) +
                                     " but a plain value on rank " + std::to_string(r));
        if (!fresh && (!dedup_replicated || world == 1))
          throw InvalidArgumentError("key '" + key + "' is saved twice");
        continue;
      }
      const TensorWriteData& td = *item.tensor_data;
      auto* t = std::get_if<TensorStorageMetadata>(&it->second);
      if (!t)
        throw InvalidArgumentError("key '" + key + "' is a plain value on rank " + first_rank(key) +
                                   " but a tensor on rank " + std::to_string(r));
      if (t->properties.dtype != td.properties.dtype || t->size != td.size)
        throw InvalidArgumentError(
            "key '" + key + "' differs between ranks: " + dtype_name(t->properties.dtype) +
            shape_str(t->size) + " on rank " + first_rank(key) + ", " +
            dtype_name(td.properties.dtype) + shape_str(td.size) + " on rank " + std::to_string(r));
      t->chunks.push_back(td.chunk);
    }
  }
  for (auto& [key, entry] : entries)
    if (auto* t = std::get_if<TensorStorageMetadata>(&entry)) validate_chunks(key, *t, all_plans);

  // Merge every rank's flattening map.
  if (world == 1) {
    md.planner_data = all_plans[0].planner_data;
  } else {
    // Ranks of one model usually send the same map: decode each distinct one once.
    FlattenMapping merged;
    std::vector<const std::string*> seen;
    for (const auto& plan : all_plans) {
      if (std::any_of(seen.begin(), seen.end(),
                      [&](const std::string* s) { return *s == plan.planner_data; }))
        continue;
      seen.push_back(&plan.planner_data);
      for (auto& [key, path] : decode_flatten_mapping(plan.planner_data)) {
        auto [it, inserted] = merged.emplace(key, path);
        if (!inserted && !(it->second == path)) throw_collision(key, it->second, path);
      }
    }
    md.planner_data = encode_flatten_mapping(merged);
  }
  return md;
}

SavePlan DefaultSavePlanner::finish_plan(SavePlan central_plan) {
  replica_requests_.clear();
  if (!central_plan.planner_data.empty())
    wire::decode(central_plan.planner_data, replica_requests_);
  // (Made by create_local_plan(), unless a subclass's plan is its own.)
  if (by_key_.size() != flat().size()) {
    by_key_.clear();
    by_key_.reserve(flat().size());
    for (const auto& kv : flat()) by_key_.emplace(kv.first, &kv.second);
  }
  return central_plan;
}

Value DefaultSavePlanner::lookup_object(const MetadataIndex& index) const {
  const Value* v = nullptr;
  if (auto hit = by_key_.find(index.fqn); hit != by_key_.end()) {
    v = hit->second;
  } else {
    auto it = flat().find(index.fqn);
    if (it == flat().end())
      throw InvalidArgumentError("no value for " + to_string(index) + " in the state dict");
    v = &it->second;
  }
  if (v->is_sharded()) {
    for (const Shard& s : v->sharded().local_shards)
      if (s.offsets == index.offset) return Value(s.tensor);
    throw InvalidArgumentError("no local shard for " + to_string(index));
  }
  return *v;
}

WriteData DefaultSavePlanner::resolve_data(const WriteItem& item) {
  Value v = lookup_object(item.index);
  if (item.type == WriteItemType::kByteIO) return encode_plain_value(v);
  // No detach(): storage reads the bytes, and copies run under NoGradGuard.
  at::Tensor t = v.tensor();
  if (!t.device().is_cpu()) {
    at::NoGradGuard no_grad;
    t = t.cpu();
  }
  return t;
}

}  // namespace dcp
