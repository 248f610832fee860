#include "dcp/default_planner.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <set>
#include <unordered_map>
#include <utility>

#include "codec.h"
#include "dcp/error.h"
#include "wire.h"

namespace dcp {

using namespace internal;

// ---------------------------------------------------------------------------
// Flattening

namespace {

bool contains_tensor(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kTensor:
    case Value::Kind::kSharded:
      return true;
    case Value::Kind::kList:
      for (const auto& e : v.list())
        if (contains_tensor(e)) return true;
      return false;
    case Value::Kind::kDict:
      for (const auto& kv : v.dict())
        if (contains_tensor(kv.second)) return true;
      return false;
    default:
      return false;
  }
}

std::string path_string(const ObjectPath& path) {
  std::string s;
  for (const auto& e : path) {
    if (!s.empty()) s += '.';
    s += e.is_index ? std::to_string(e.index) : e.key;
  }
  return s;
}

// Calls leaf(key, value, path) for every leaf of `v`, in key order. V is
// `const Value` or `Value`, so the same walk serves saving (copies) and
// loading (pointers into the caller's dict).
template <typename V, typename Leaf>
void walk(V& v, ObjectPath& path, const Leaf& leaf) {
  if (v.is_stateful())
    throw InvalidArgumentError("key '" + path_string(path) +
                               "': Stateful objects must be resolved before planning");
  if (v.is_dict() && !v.dict().empty()) {
    for (auto& kv : v.dict()) {
      path.push_back(PathElement{false, kv.first, 0});
      walk(kv.second, path, leaf);
      path.pop_back();
    }
  } else if (v.is_list() && contains_tensor(v)) {
    auto& list = v.list();
    for (size_t i = 0; i < list.size(); ++i) {
      path.push_back(PathElement{true, "", static_cast<int64_t>(i)});
      walk(list[i], path, leaf);
      path.pop_back();
    }
  } else {
    leaf(path_string(path), v, path);
  }
}

template <typename D, typename Leaf>
void walk_dict(D& state_dict, const Leaf& leaf) {
  ObjectPath path;
  for (auto& kv : state_dict) {
    path.push_back(PathElement{false, kv.first, 0});
    walk(kv.second, path, leaf);
    path.pop_back();
  }
}

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
// Chunk geometry

namespace {

int64_t volume(const std::vector<int64_t>& sizes) {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  return n;
}

std::string shape_str(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

bool boxes_overlap(const ChunkStorageMetadata& a, const ChunkStorageMetadata& b) {
  for (size_t d = 0; d < a.offsets.size(); ++d) {
    if (a.offsets[d] >= b.offsets[d] + b.sizes[d] || b.offsets[d] >= a.offsets[d] + a.sizes[d])
      return false;
  }
  return true;
}

// Checks that the chunks of one tensor lie inside it, do not overlap and
// cover it. A sweep along the dimension with the most distinct offsets keeps
// this near O(n log n) for row, column and block layouts (a pairwise check
// is O(n^2): pytorch/pytorch#163548).
void validate_chunks(const std::string& fqn, const TensorStorageMetadata& t) {
  const size_t ndim = t.size.size();
  // Scratch space reused across the (many) tensors of one plan.
  thread_local std::vector<const ChunkStorageMetadata*> nonempty, active;
  thread_local std::vector<int64_t> offs;
  nonempty.clear();
  active.clear();
  int64_t covered = 0;
  for (const auto& c : t.chunks) {
    if (c.offsets.size() != ndim || c.sizes.size() != ndim)
      throw InvalidArgumentError("key '" + fqn + "': chunk at " + shape_str(c.offsets) +
                                 " has a different number of dimensions than the tensor " +
                                 shape_str(t.size));
    for (size_t d = 0; d < ndim; ++d) {
      if (c.offsets[d] < 0 || c.sizes[d] < 0 || c.offsets[d] + c.sizes[d] > t.size[d])
        throw InvalidArgumentError("key '" + fqn + "': chunk at " + shape_str(c.offsets) +
                                   " of size " + shape_str(c.sizes) + " lies outside the tensor " +
                                   shape_str(t.size));
    }
    const int64_t v = volume(c.sizes);
    covered += v;
    if (v > 0) nonempty.push_back(&c);
  }
  if (nonempty.size() > 1 && ndim > 0) {
    size_t best_dim = 0, best_distinct = 0;
    for (size_t d = 0; d < ndim; ++d) {
      offs.clear();
      for (const auto* c : nonempty) offs.push_back(c->offsets[d]);
      std::sort(offs.begin(), offs.end());
      const size_t distinct = std::unique(offs.begin(), offs.end()) - offs.begin();
      if (distinct > best_distinct) best_distinct = distinct, best_dim = d;
    }
    std::sort(nonempty.begin(), nonempty.end(), [&](const auto* a, const auto* b) {
      return a->offsets[best_dim] < b->offsets[best_dim];
    });
    for (const auto* c : nonempty) {
      const int64_t start = c->offsets[best_dim];
      active.erase(std::remove_if(active.begin(), active.end(),
                                  [&](const auto* a) {
                                    return a->offsets[best_dim] + a->sizes[best_dim] <= start;
                                  }),
                   active.end());
      for (const auto* a : active)
        if (boxes_overlap(*a, *c))
          throw InvalidArgumentError("key '" + fqn + "': chunks at " + shape_str(a->offsets) +
                                     " and " + shape_str(c->offsets) + " overlap");
      active.push_back(c);
    }
  } else if (nonempty.size() > 1) {
    throw InvalidArgumentError("key '" + fqn + "': a 0-dim tensor saved twice");
  }
  if (covered != volume(t.size))
    throw InvalidArgumentError("key '" + fqn + "': the saved chunks cover " +
                               std::to_string(covered) + " of " + std::to_string(volume(t.size)) +
                               " elements of " + shape_str(t.size) +
                               " (every element must be saved by exactly one rank)");
}

TensorProperties properties_of(const at::Tensor& t) {
  return TensorProperties{t.scalar_type(), t.requires_grad()};
}

void check_saveable(const at::Tensor& t, const std::string& key) {
  if (!t.defined()) throw InvalidArgumentError("key '" + key + "': tensor is undefined");
  if (t.layout() != at::kStrided)
    throw InvalidArgumentError("key '" + key + "': only strided (dense) tensors can be saved");
  check_supported_dtype(t.scalar_type(), "key '" + key + "'");
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
      for (const Shard& s : st.local_shards) {
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
    if (auto* t = std::get_if<TensorStorageMetadata>(&entry)) validate_chunks(key, *t);

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

// ---------------------------------------------------------------------------
// DefaultLoadPlanner

bool key_matches(const std::string& key, const std::vector<std::string>& patterns) {
  for (const auto& p : patterns)
    if (key == p ||
        (key.size() > p.size() && key.compare(0, p.size(), p) == 0 && key[p.size()] == '.'))
      return true;
  return false;
}

DefaultLoadPlanner::DefaultLoadPlanner(LoadPlannerOptions options) : options_(std::move(options)) {}

void DefaultLoadPlanner::set_up_planner(StateDict& state_dict, const Metadata& metadata,
                                        bool is_coordinator) {
  flat_.clear();
  missing_.clear();
  unexpected_.clear();
  converted_.clear();
  walk_dict(state_dict, [&](const std::string& key, Value& v, const ObjectPath&) {
    if (!flat_.emplace(key, &v).second)
      throw InvalidArgumentError("flattened key '" + key + "' comes from two places");
  });
  metadata_ = &metadata;
  is_coordinator_ = is_coordinator;
}

LoadPlan DefaultLoadPlanner::create_local_plan() {
  LoadPlan plan;
  std::vector<std::string> problems;
  const bool excluding = !options_.exclude.empty();
  for (const auto& [key, dest] : flat_) {
    if (excluding && key_matches(key, options_.exclude)) continue;
    auto it = metadata_->state_dict_metadata.find(key);
    if (it == metadata_->state_dict_metadata.end()) {
      missing_.push_back(key);
      continue;
    }
    if (std::holds_alternative<BytesStorageMetadata>(it->second)) {
      if (dest->is_tensor() || dest->is_sharded()) {
        problems.push_back("'" + key +
                           "': the checkpoint holds a plain value, the destination is a " +
                           describe(*dest));
        continue;
      }
      ReadItem item;
      item.type = LoadItemType::kByteIO;
      item.dest_index = MetadataIndex(key);
      item.storage_index = MetadataIndex(key);
      plan.items.push_back(std::move(item));
      continue;
    }
    const auto& saved = std::get<TensorStorageMetadata>(it->second);
    const std::string saved_desc =
        std::string(dtype_name(saved.properties.dtype)) + shape_str(saved.size);
    // The destination boxes: the whole tensor, or each local shard.
    std::vector<std::pair<std::vector<int64_t>, at::Tensor>> boxes;
    std::vector<int64_t> dest_size;
    if (dest->is_tensor()) {
      const at::Tensor& t = dest->tensor();
      if (!t.defined()) {
        problems.push_back("'" + key + "': the destination tensor is undefined");
        continue;
      }
      dest_size = t.sizes().vec();
      boxes.emplace_back(std::vector<int64_t>(dest_size.size(), 0), t);
    } else if (dest->is_sharded()) {
      // Read through const access: a mutable one would give the working copy
      // a ShardedTensor of its own (copy on write) and the load would then
      // replace the caller's.
      const ShardedTensor& st = std::as_const(*dest).sharded();
      dest_size = st.global_size;
      for (const Shard& s : st.local_shards) boxes.emplace_back(s.offsets, s.tensor);
    } else {
      problems.push_back("'" + key + "': the checkpoint holds tensor " + saved_desc +
                         ", the destination is a " + describe(*dest));
      continue;
    }
    if (dest_size != saved.size) {
      problems.push_back("'" + key + "': shape mismatch: checkpoint " + saved_desc +
                         ", destination " + shape_str(dest_size));
      continue;
    }
    bool dtype_ok = true;
    for (const auto& box : boxes) {
      const at::ScalarType dt = box.second.scalar_type();
      if (dt == saved.properties.dtype) continue;
      if (options_.allow_dtype_conversion) {
        converted_[key] = saved.properties.dtype;
      } else {
        problems.push_back("'" + key + "': dtype mismatch: checkpoint " + saved_desc +
                           ", destination " + dtype_name(dt) + shape_str(dest_size));
        dtype_ok = false;
        break;
      }
    }
    if (!dtype_ok) continue;
    for (const auto& [offsets, tensor] : boxes) {
      const std::vector<int64_t> sizes = tensor.sizes().vec();
      if (offsets.size() != dest_size.size() || sizes.size() != dest_size.size()) {
        problems.push_back("'" + key + "': a destination shard does not match the global shape");
        break;
      }
      for (const auto& chunk : saved.chunks) {
        // The intersection of the destination box and the saved chunk.
        ReadItem item;
        item.type = LoadItemType::kTensor;
        item.dest_index = MetadataIndex(key, offsets);
        item.storage_index = MetadataIndex(key, chunk.offsets);
        bool empty = false;
        for (size_t d = 0; d < sizes.size(); ++d) {
          const int64_t lo = std::max(offsets[d], chunk.offsets[d]);
          const int64_t hi = std::min(offsets[d] + sizes[d], chunk.offsets[d] + chunk.sizes[d]);
          if (hi <= lo) {
            empty = true;
            break;
          }
          item.dest_offsets.push_back(lo - offsets[d]);
          item.storage_offsets.push_back(lo - chunk.offsets[d]);
          item.lengths.push_back(hi - lo);
        }
        // A tensor with no elements still needs one (empty) read to match its chunk.
        const bool zero_numel = volume(sizes) == 0 && volume(chunk.sizes) == 0;
        if (empty && !zero_numel) continue;
        if (empty) {
          item.dest_offsets.assign(sizes.size(), 0);
          item.storage_offsets.assign(sizes.size(), 0);
          item.lengths = sizes;
        }
        plan.items.push_back(std::move(item));
      }
    }
  }
  for (const auto& kv : metadata_->state_dict_metadata)
    if (!flat_.count(kv.first) && !(excluding && key_matches(kv.first, options_.exclude)))
      unexpected_.push_back(kv.first);

  auto list = [](const std::vector<std::string>& keys) {
    std::string s;
    const size_t shown = std::min<size_t>(keys.size(), 20);
    for (size_t i = 0; i < shown; ++i) s += (i ? ", '" : "'") + keys[i] + "'";
    if (keys.size() > shown) s += ", ... (" + std::to_string(keys.size()) + " in all)";
    return s;
  };
  if (!problems.empty()) {
    std::string msg =
        std::to_string(problems.size()) + " key(s) of the state dict do not match the checkpoint:";
    for (size_t i = 0; i < std::min<size_t>(problems.size(), 20); ++i)
      msg += "\n    " + problems[i];
    throw PlanMismatchError(msg);
  }
  if (options_.strict && (!missing_.empty() || !unexpected_.empty())) {
    std::string msg = "the state dict and the checkpoint have different keys (strict load)";
    if (!missing_.empty()) msg += "; missing from the checkpoint: " + list(missing_);
    if (!unexpected_.empty())
      msg += "; in the checkpoint but not in the state dict: " + list(unexpected_);
    throw PlanMismatchError(msg);
  }
  return plan;
}

std::vector<LoadPlan> DefaultLoadPlanner::create_global_plan(std::vector<LoadPlan> all_plans) {
  return all_plans;
}

LoadPlan DefaultLoadPlanner::finish_plan(LoadPlan central_plan) {
  plan_ = central_plan;
  return central_plan;
}

void DefaultLoadPlanner::load_bytes(const ReadItem& item, const Bytes& value) {
  auto it = flat_.find(item.dest_index.fqn);
  if (it == flat_.end())
    throw InvalidArgumentError("no destination for " + to_string(item.dest_index));
  *it->second = decode_plain_value(value.data, "plain value of key '" + item.dest_index.fqn + "'");
}

at::Tensor DefaultLoadPlanner::destination_view(const ReadItem& item) const {
  auto it = flat_.find(item.dest_index.fqn);
  if (it == flat_.end())
    throw InvalidArgumentError("no destination for " + to_string(item.dest_index));
  at::Tensor t;
  if (it->second->is_sharded()) {
    for (const Shard& s : std::as_const(*it->second).sharded().local_shards)  // const: see above
      if (s.offsets == item.dest_index.offset) t = s.tensor;
    if (!t.defined())
      throw InvalidArgumentError("no local shard for " + to_string(item.dest_index));
  } else {
    t = it->second->tensor();
  }
  for (size_t d = 0; d < item.lengths.size(); ++d) {
    if (item.dest_offsets[d] != 0 || item.lengths[d] != t.size(d))
      t = t.narrow(static_cast<int64_t>(d), item.dest_offsets[d], item.lengths[d]);
  }
  return t;
}

at::Tensor DefaultLoadPlanner::resolve_tensor(const ReadItem& item) {
  at::Tensor view = destination_view(item);
  auto conv = converted_.find(item.dest_index.fqn);
  if (conv != converted_.end()) return at::empty(item.lengths, view.options().dtype(conv->second));
  return view;
}

void DefaultLoadPlanner::commit_tensor(const ReadItem& item, at::Tensor& tensor) {
  if (converted_.count(item.dest_index.fqn)) {
    at::NoGradGuard no_grad;
    destination_view(item).copy_(tensor);
  }
}

StateDict state_dict_from_metadata(const Metadata& metadata) {
  Dict flat;
  for (const auto& [key, entry] : metadata.state_dict_metadata) {
    if (const auto* t = std::get_if<TensorStorageMetadata>(&entry)) {
      flat.emplace(key, at::empty(t->size, at::TensorOptions().dtype(t->properties.dtype)));
    } else {
      flat.emplace(key, Value());
    }
  }
  return unflatten_state_dict(flat, decode_flatten_mapping(metadata.planner_data));
}

}  // namespace dcp
