#include "dcp/default_planner.h"

#include <spdlog/spdlog.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <unordered_map>
#include <utility>

#include "chunk_validation.h"
#include "codec.h"
#include "dcp/error.h"
#include "dcp/logging.h"
#include "walk.h"
#include "wire.h"

namespace dcp {

// ---------------------------------------------------------------------------
// Flattening

namespace {

[[noreturn]] void throw_collision(const std::string& key, const ObjectPath& a,
                                  const ObjectPath& b) {
  auto show = [](const ObjectPath& p) {
    std::string s;
    for (const auto& e : p)
      s += e.is_index ? "[" + std::to_string(e.index) + "]" : "['" + e.key + "']";
    return s;
  };
  throw InvalidArgumentError("flattened key '" + key + "' comes from two places: " + show(a) +
                             " and " + show(b) + "; rename one of them");
}

}  // namespace

std::pair<Dict, FlattenMapping> flatten_state_dict(const StateDict& state_dict) {
  Dict flat;
  FlattenMapping mapping;
  // Leaves come in key order of each level, so appending at the end is the
  // common case; a top-level key that is its own path needs no mapping entry.
  walk_dict(state_dict, [&](const std::string& key, const Value& v, const ObjectPath& path) {
    const bool trivial = path.size() == 1;
    const size_t before = flat.size();
    flat.emplace_hint(flat.end(), key, v);
    if (flat.size() == before) {
      auto a = mapping.find(key);
      throw_collision(key, a != mapping.end() ? a->second : ObjectPath{PathElement{false, key, 0}},
                      path);
    }
    if (!trivial) mapping.emplace_hint(mapping.end(), key, path);
  });
  return {std::move(flat), std::move(mapping)};
}

StateDict unflatten_state_dict(const Dict& flat, const FlattenMapping& mapping) {
  StateDict out;
  for (const auto& [key, value] : flat) {
    auto it = mapping.find(key);
    ObjectPath path = it != mapping.end() ? it->second : ObjectPath{PathElement{false, key, 0}};
    if (path.empty() || path[0].is_index)
      throw CorruptionError("flatten mapping of key '" + key + "' does not start with a dict key");
    Value* node = nullptr;
    for (size_t i = 0; i < path.size(); ++i) {
      const PathElement& e = path[i];
      const bool last = i + 1 == path.size();
      Value* child;
      if (i == 0) {
        child = &out[e.key];
      } else if (e.is_index) {
        if (node->is_none()) *node = List{};
        if (!node->is_list())
          throw CorruptionError("flatten mapping of key '" + key + "' is inconsistent");
        auto& list = node->list();
        if (e.index < 0 || e.index > (1 << 30))
          throw CorruptionError("flatten mapping of key '" + key + "' has a bad list index");
        if (list.size() <= static_cast<size_t>(e.index)) list.resize(e.index + 1);
        child = &list[e.index];
      } else {
        if (node->is_none()) *node = Dict{};
        if (!node->is_dict())
          throw CorruptionError("flatten mapping of key '" + key + "' is inconsistent");
        child = &node->dict()[e.key];
      }
      if (last) *child = value;
      node = child;
    }
  }
  return out;
}

std::string encode_flatten_mapping(const FlattenMapping& mapping) {
  codec::Encoder e;
  e.u8(1);  // version of this encoding
  e.varint(mapping.size());
  for (const auto& [key, path] : mapping) {
    e.str(key);
    // The common case, a path of plain keys that joins to the flat key, is one byte.
    const bool trivial = path.size() == 1 && !path[0].is_index && path[0].key == key;
    if (trivial) {
      e.varint(0);
      continue;
    }
    e.varint(path.size());
    for (const auto& p : path) {
      e.u8(p.is_index ? 1 : 0);
      if (p.is_index)
        e.svarint(p.index);
      else
        e.str(p.key);
    }
  }
  return e.take();
}

FlattenMapping decode_flatten_mapping(std::string_view bytes) {
  FlattenMapping mapping;
  if (bytes.empty()) return mapping;
  codec::Decoder d(bytes, "flatten mapping");
  if (d.u8() != 1) d.fail("unknown flatten mapping version");
  const size_t n = d.count("mapping");
  for (size_t i = 0; i < n; ++i) {
    std::string key = d.str();
    const size_t len = d.count("path");
    ObjectPath path;
    if (len == 0) {
      path.push_back(PathElement{false, key, 0});
    } else {
      path.resize(len);
      for (auto& p : path) {
        p.is_index = d.u8() != 0;
        if (p.is_index)
          p.index = d.svarint();
        else
          p.key = d.str();
      }
    }
    mapping.emplace_hint(mapping.end(), std::move(key), std::move(path));
  }
  return mapping;
}

// ---------------------------------------------------------------------------
// Plain values

namespace {
enum PlainTag : uint8_t { kNone = 0, kFalse, kTrue, kInt, kDouble, kString, kBytes, kList, kDict };
constexpr uint8_t kPlainMarker = 0xD1;  // first byte of every encoded plain value

void encode_plain(codec::Encoder& e, const Value& v, const std::string& what) {
  switch (v.kind()) {
    case Value::Kind::kNone:
      e.u8(kNone);
      break;
    case Value::Kind::kBool:
      e.u8(v.to_bool() ? kTrue : kFalse);
      break;
    case Value::Kind::kInt:
      e.u8(kInt);
      e.svarint(v.to_int());
      break;
    case Value::Kind::kDouble:
      e.u8(kDouble);
      e.f64(v.to_double());
      break;
    case Value::Kind::kString:
      e.u8(kString);
      e.str(v.to_string());
      break;
    case Value::Kind::kBytes:
      e.u8(kBytes);
      e.str(v.to_bytes().data);
      break;
    case Value::Kind::kList:
      e.u8(kList);
      e.varint(v.list().size());
      for (const auto& x : v.list()) encode_plain(e, x, what);
      break;
    case Value::Kind::kDict:
      e.u8(kDict);
      e.varint(v.dict().size());
      for (const auto& kv : v.dict()) {
        e.str(kv.first);
        encode_plain(e, kv.second, what);
      }
      break;
    default:
      throw InvalidArgumentError(what + ": a " + v.kind_name() +
                                 " cannot be stored as a plain value");
  }
}

Value decode_plain(codec::Decoder& d, int depth) {
  if (depth > 256) d.fail("plain value nested too deeply");
  switch (d.u8()) {
    case kNone:
      return Value();
    case kFalse:
      return Value(false);
    case kTrue:
      return Value(true);
    case kInt:
      return Value(d.svarint());
    case kDouble:
      return Value(d.f64());
    case kString:
      return Value(d.str());
    case kBytes:
      return Value(Bytes{d.str()});
    case kList: {
      List list(d.count("list"));
      for (auto& x : list) x = decode_plain(d, depth + 1);
      return Value(std::move(list));
    }
    case kDict: {
      Dict dict;
      const size_t n = d.count("dict");
      for (size_t i = 0; i < n; ++i) {
        std::string k = d.str();
        dict[std::move(k)] = decode_plain(d, depth + 1);
      }
      return Value(std::move(dict));
    }
    default:
      d.fail("unknown plain value tag");
  }
}
}  // namespace

Bytes encode_plain_value(const Value& value) {
  codec::Encoder e;
  e.u8(kPlainMarker);
  encode_plain(e, value, "plain value");
  return Bytes{e.take()};
}

Value decode_plain_value(std::string_view bytes, const std::string& what) {
  codec::Decoder d(bytes, what);
  if (d.u8() != kPlainMarker) d.fail("not an encoded plain value");
  Value v = decode_plain(d, 0);
  if (!d.done()) d.fail("trailing bytes after plain value");
  return v;
}

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
  check_supported_dtype(t.scalar_type(), "key '" + key + "'");
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
  if (options_.flatten_state_dict) {
    std::tie(flat_, mapping_) = flatten_state_dict(state_dict);
  } else {
    flat_ = state_dict;
    mapping_.clear();
  }
  storage_meta_ = storage_meta;
  is_coordinator_ = is_coordinator;
}

SavePlan DefaultSavePlanner::create_local_plan() {
  SavePlan plan;
  plan.items.reserve(flat_.size());
  for (const auto& [key, v] : flat_) {
    if (v.is_tensor()) {
      const at::Tensor& t = v.tensor();
      check_saveable(t, key);
      std::vector<int64_t> size = t.sizes().vec();
      std::vector<int64_t> zeros(size.size(), 0);
      WriteItem item;
      item.index = MetadataIndex(key, zeros);
      item.type = WriteItemType::kTensor;
      item.tensor_data = TensorWriteData{ChunkStorageMetadata{zeros, size}, properties_of(t), size};
      plan.items.push_back(std::move(item));
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

namespace {

struct IndexPtrHash {
  size_t operator()(const MetadataIndex* i) const {
    size_t h = std::hash<std::string_view>()(i->fqn);
    for (int64_t o : i->offset) h = h * 1000003u ^ std::hash<int64_t>()(o);
    return h;
  }
};
struct IndexPtrEq {
  bool operator()(const MetadataIndex* a, const MetadataIndex* b) const { return *a == *b; }
};

}  // namespace

namespace {

// One item held by several ranks (or twice by one), and who writes it.
struct Replicated {
  const MetadataIndex* index = nullptr;
  int64_t bytes = 0;
  std::vector<std::pair<uint32_t, uint32_t>> holders;  // (rank, position), ranks ascending
  uint32_t writer = 0;
};

bool sorted_by_fqn(const SavePlan& plan) {
  return std::is_sorted(
      plan.items.begin(), plan.items.end(),
      [](const WriteItem& a, const WriteItem& b) { return a.index.fqn < b.index.fqn; });
}

int64_t dedup_bytes(const WriteItem& item) { return item.tensor_storage_size().value_or(64); }

// The replicated items of plans each sorted by key: a k-way merge of the
// plans, key by key (no table of every item: at 400k items a hash map cost
// most of the global plan). `load` gets the bytes of the items only one rank
// holds.
std::vector<Replicated> find_replicated_merging(const std::vector<SavePlan>& plans,
                                                std::vector<int64_t>& load) {
  const size_t world = plans.size();
  std::vector<size_t> at(world, 0);
  std::vector<std::pair<uint32_t, uint32_t>> group;  // this key's items: (rank, position)
  std::vector<Replicated> out;
  for (;;) {
    const std::string* key = nullptr;
    for (size_t r = 0; r < world; ++r)
      if (at[r] < plans[r].items.size()) {
        const std::string& k = plans[r].items[at[r]].index.fqn;
        if (!key || k < *key) key = &k;
      }
    if (!key) break;
    group.clear();
    for (size_t r = 0; r < world; ++r)
      for (const auto& items = plans[r].items;
           at[r] < items.size() && items[at[r]].index.fqn == *key; ++at[r])
        group.emplace_back(static_cast<uint32_t>(r), static_cast<uint32_t>(at[r]));
    auto item = [&](const std::pair<uint32_t, uint32_t>& ref) -> const WriteItem& {
      return plans[ref.first].items[ref.second];
    };
    if (group.size() == 1) {
      load[group[0].first] += dedup_bytes(item(group[0]));
      continue;
    }
    // Shards of one key: equal offsets are the same item. Stable: ranks
    // stay ascending within each offset.
    std::stable_sort(group.begin(), group.end(), [&](const auto& a, const auto& b) {
      return item(a).index.offset < item(b).index.offset;
    });
    for (size_t b = 0, e; b < group.size(); b = e) {
      for (e = b + 1;
           e < group.size() && item(group[e]).index.offset == item(group[b]).index.offset;)
        ++e;
      if (e - b == 1) {
        load[group[b].first] += dedup_bytes(item(group[b]));
        continue;
      }
      Replicated rep;
      rep.index = &item(group[b]).index;
      rep.bytes = dedup_bytes(item(group[b]));
      rep.holders.assign(group.begin() + b, group.begin() + e);
      out.push_back(std::move(rep));
    }
  }
  return out;
}

// The same for plans in any order, through a hash map of every item.
std::vector<Replicated> find_replicated_hashing(const std::vector<SavePlan>& plans,
                                                std::vector<int64_t>& load) {
  size_t total = 0;
  for (const auto& p : plans) total += p.items.size();
  std::unordered_map<const MetadataIndex*, size_t, IndexPtrHash, IndexPtrEq> first;  // -> slot
  first.reserve(total);
  std::vector<Replicated> slots;
  for (size_t r = 0; r < plans.size(); ++r)
    for (size_t i = 0; i < plans[r].items.size(); ++i) {
      const WriteItem& it = plans[r].items[i];
      auto [pos, fresh] = first.emplace(&it.index, slots.size());
      if (fresh) {
        slots.emplace_back();
        slots.back().index = &it.index;
        slots.back().bytes = dedup_bytes(it);
      }
      slots[pos->second].holders.emplace_back(static_cast<uint32_t>(r), static_cast<uint32_t>(i));
    }
  std::vector<Replicated> out;
  for (auto& s : slots) {
    if (s.holders.size() == 1)
      load[s.holders[0].first] += s.bytes;
    else
      out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

std::vector<std::vector<ReplicaRequest>> DefaultSavePlanner::dedup(
    std::vector<SavePlan>& all_plans) const {
  const size_t world = all_plans.size();
  std::vector<std::vector<ReplicaRequest>> requests(world);
  std::vector<int64_t> load(world, 0);
  // DefaultSavePlanner's local plans list keys in order (flat_ is a map);
  // a subclass's plans may not, and take the hash map.
  const bool sorted = std::all_of(all_plans.begin(), all_plans.end(), sorted_by_fqn);
  std::vector<Replicated> reps =
      sorted ? find_replicated_merging(all_plans, load) : find_replicated_hashing(all_plans, load);
  if (reps.empty()) return requests;
  // Largest first onto the least-loaded holder (greedy balancing); ties in
  // key order, so every run decides the same.
  std::sort(reps.begin(), reps.end(), [](const Replicated& a, const Replicated& b) {
    return a.bytes != b.bytes ? a.bytes > b.bytes : *a.index < *b.index;
  });
  std::vector<std::vector<char>> keep(world);
  for (size_t r = 0; r < world; ++r) keep[r].assign(all_plans[r].items.size(), 1);
  for (Replicated& d : reps) {
    uint32_t pick = d.holders.front().first;
    if (!options_.dedup_to_lowest_rank)
      for (const auto& h : d.holders)
        if (load[h.first] < load[pick]) pick = h.first;
    load[pick] += d.bytes;
    d.writer = pick;
  }
  // Decide first, then compact: `reps` points into the plans.
  for (const Replicated& d : reps)
    for (const auto& h : d.holders) {
      const WriteItem& item = all_plans[h.first].items[h.second];
      if (options_.check_replicas != ReplicaCheck::kOff) {
        if (h.first == d.writer)
          requests[h.first].push_back(ReplicaRequest{WriteItem{item.index, item.type, {}}, true});
        else
          requests[h.first].push_back(ReplicaRequest{item, false});
      }
      if (h.first != d.writer) keep[h.first][h.second] = 0;
    }
  reps.clear();
  for (size_t r = 0; r < world; ++r) {
    auto& items = all_plans[r].items;
    size_t out = 0;
    for (size_t i = 0; i < items.size(); ++i)
      if (keep[r][i]) {
        if (out != i) items[out] = std::move(items[i]);
        ++out;
      }
    items.resize(out);
  }
  return requests;
}

std::pair<std::vector<SavePlan>, Metadata> DefaultSavePlanner::create_global_plan(
    std::vector<SavePlan> all_plans) {
  const size_t world = all_plans.size();

  std::vector<std::vector<ReplicaRequest>> requests;
  if (options_.dedup_replicated && world > 1) requests = dedup(all_plans);

  Metadata md;
  md.world_size = static_cast<int32_t>(world);
  md.storage_meta = storage_meta_;
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
        if (!fresh && (!options_.dedup_replicated || world == 1))
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
  // A final plan's planner_data is what the replica check asks of its rank
  // (the flattening maps are in the metadata now).
  for (size_t r = 0; r < world; ++r)
    all_plans[r].planner_data = r < requests.size() ? wire::encode(requests[r]) : std::string();
  return {std::move(all_plans), std::move(md)};
}

SavePlan DefaultSavePlanner::finish_plan(SavePlan central_plan) {
  replica_requests_.clear();
  if (!central_plan.planner_data.empty())
    wire::decode(central_plan.planner_data, replica_requests_);
  plan_ = central_plan;
  return central_plan;
}

Value DefaultSavePlanner::lookup_object(const MetadataIndex& index) const {
  auto it = flat_.find(index.fqn);
  if (it == flat_.end())
    throw InvalidArgumentError("no value for " + to_string(index) + " in the state dict");
  if (it->second.is_sharded()) {
    for (const Shard& s : it->second.sharded().local_shards)
      if (s.offsets == index.offset) return Value(s.tensor);
    throw InvalidArgumentError("no local shard for " + to_string(index));
  }
  return it->second;
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
