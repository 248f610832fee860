// DefaultLoadPlanner: the destination boxes, their reads from the saved
// chunks, and which keys the ranks asked for.
#include <ATen/ATen.h>
#include <sys/mman.h>

#include <algorithm>
#include <utility>

#include "chunk_validation.h"
#include "codec.h"
#include "dcp/default_planner.h"
#include "dcp/error.h"
#include "walk.h"

namespace dcp {

using namespace internal;

bool key_matches(const std::string& key, const std::vector<std::string>& patterns) {
  for (const auto& p : patterns)
    if (key == p ||
        (key.size() > p.size() && key.compare(0, p.size(), p) == 0 && key[p.size()] == '.'))
      return true;
  return false;
}

std::string renamed_key(const std::string& key, const std::vector<KeyRename>& rename) {
  for (const KeyRename& r : rename)
    if (key.compare(0, r.from.size(), r.from) == 0) return r.to + key.substr(r.from.size());
  return key;
}

namespace {

// planner_data of DefaultLoadPlanner's plans. A local plan carries the
// rank's request: whether it loads strictly, its missing keys, and one bit
// per key of the checkpoint (in key order), set when the rank's state dict
// holds the key or excludes it. The final plans carry the coordinator's
// verdict: the keys no rank holds or excludes (unexpected), the same for all.
constexpr uint8_t kRequestTag = 0xA1, kVerdictTag = 0xA2;
const char* const kWhat = "load plan request";

struct Request {
  bool strict = true;
  std::vector<std::string> missing;
  uint64_t n_keys = 0;
  std::string_view bits;  // (n_keys + 7) / 8 bytes
};

std::string encode_request(bool strict, const std::vector<std::string>& missing,
                           const std::string& bits, size_t n_keys) {
  codec::Encoder e;
  e.u8(kRequestTag);
  e.u8(strict ? 1 : 0);
  e.varint(missing.size());
  for (const auto& k : missing) e.str(k);
  e.varint(n_keys);
  e.raw(bits.data(), bits.size());
  return e.take();
}

// False when `bytes` is not a request (a subclass's plan).
bool decode_request(std::string_view bytes, Request& out) {
  if (bytes.empty() || static_cast<uint8_t>(bytes[0]) != kRequestTag) return false;
  codec::Decoder d(bytes.substr(1), kWhat);
  out.strict = d.u8() != 0;
  out.missing.resize(d.count("missing key"));
  for (auto& k : out.missing) k = d.str();
  out.n_keys = d.varint();
  if (out.n_keys > 8 * d.remaining()) d.fail("implausible key count");
  out.bits = d.raw((out.n_keys + 7) / 8);
  if (!d.done()) d.fail("trailing bytes");
  return true;
}

std::string encode_verdict(const std::vector<std::string>& unexpected) {
  codec::Encoder e;
  e.u8(kVerdictTag);
  e.varint(unexpected.size());
  for (const auto& k : unexpected) e.str(k);
  return e.take();
}

bool decode_verdict(std::string_view bytes, std::vector<std::string>& out) {
  if (bytes.empty() || static_cast<uint8_t>(bytes[0]) != kVerdictTag) return false;
  codec::Decoder d(bytes.substr(1), "load plan verdict");
  out.resize(d.count("unexpected key"));
  for (auto& k : out) k = d.str();
  if (!d.done()) d.fail("trailing bytes");
  return true;
}

// The first 20 entries, then how many there are.
std::string listing(const std::vector<std::string>& entries) {
  std::string s;
  const size_t shown = std::min<size_t>(entries.size(), 20);
  for (size_t i = 0; i < shown; ++i) s += (i ? ", " : "") + entries[i];
  if (entries.size() > shown) s += ", ... (" + std::to_string(entries.size()) + " in all)";
  return s;
}

std::vector<std::string> quoted(const std::vector<std::string>& keys) {
  std::vector<std::string> out;
  out.reserve(keys.size());
  for (const auto& k : keys) out.push_back("'" + k + "'");
  return out;
}

// A strict load's error. `missing[r]` are rank r's missing keys; with one
// rank the message names no ranks.
std::string strict_message(const std::vector<std::vector<std::string>>& missing,
                           const std::vector<std::string>& unexpected) {
  std::string msg = "the state dict and the checkpoint have different keys (strict load)";
  const bool one = missing.size() == 1;
  std::map<std::string, std::vector<size_t>> who;  // missing key -> ranks
  for (size_t r = 0; r < missing.size(); ++r)
    for (const auto& k : missing[r]) who[k].push_back(r);
  if (!who.empty()) {
    std::vector<std::string> entries;
    for (const auto& [key, ranks] : who) {
      std::string e = "'" + key + "'";
      if (!one) {
        e += ranks.size() == 1 ? " (rank " : " (ranks ";
        for (size_t i = 0; i < ranks.size(); ++i) e += (i ? ", " : "") + std::to_string(ranks[i]);
        e += ")";
      }
      entries.push_back(std::move(e));
    }
    msg += "; missing from the checkpoint: " + listing(entries);
  }
  if (!unexpected.empty())
    msg += std::string("; in the checkpoint but not in ") +
           (one ? "the state dict: " : "any rank's state dict: ") + listing(quoted(unexpected));
  return msg;
}

// The read of the part of saved `chunk` inside the destination box at
// `offsets` of `sizes`; false when they share no element (an empty box
// shares none).
bool intersect(const std::vector<int64_t>& offsets, at::IntArrayRef sizes,
               const ChunkStorageMetadata& chunk, ReadItem& item) {
  item.dest_offsets.reserve(sizes.size());
  item.storage_offsets.reserve(sizes.size());
  item.lengths.reserve(sizes.size());
  for (size_t d = 0; d < sizes.size(); ++d) {
    const int64_t lo = std::max(offsets[d], chunk.offsets[d]);
    const int64_t hi = std::min(offsets[d] + sizes[d], chunk.offsets[d] + chunk.sizes[d]);
    if (hi <= lo) return false;
    item.dest_offsets.push_back(lo - offsets[d]);
    item.storage_offsets.push_back(lo - chunk.offsets[d]);
    item.lengths.push_back(hi - lo);
  }
  return true;
}

using Boxes = std::vector<std::pair<std::vector<int64_t>, at::Tensor>>;

// What is wrong with the destination boxes of a tensor of `size` (each
// inside it, at distinct offsets), or "".
std::string check_boxes(const Boxes& boxes, const std::vector<int64_t>& size) {
  for (const auto& b : boxes) {
    const std::vector<int64_t>& offsets = b.first;  // (lambdas below capture it)
    const at::IntArrayRef sizes = b.second.sizes();
    auto box = [&] {
      return "destination shard at " + shape_str(offsets) + " of shape " + shape_str(sizes.vec());
    };
    if (offsets.size() != size.size() || sizes.size() != size.size())
      return box() + " does not match the global shape " + shape_str(size);
    for (size_t d = 0; d < size.size(); ++d)
      if (offsets[d] < 0 || offsets[d] > size[d] || sizes[d] > size[d] - offsets[d])
        return box() + " lies outside the tensor " + shape_str(size);
  }
  if (boxes.size() > 1) {
    std::vector<const std::vector<int64_t>*> offs;
    for (const auto& b : boxes) offs.push_back(&b.first);
    std::sort(offs.begin(), offs.end(), [](const auto* a, const auto* b) { return *a < *b; });
    for (size_t i = 1; i < offs.size(); ++i)
      if (*offs[i] == *offs[i - 1]) return "two destination shards start at " + shape_str(*offs[i]);
  }
  return "";
}

}  // namespace

DefaultLoadPlanner::DefaultLoadPlanner(LoadPlannerOptions options) : options_(std::move(options)) {}

void DefaultLoadPlanner::set_up_planner(StateDict& state_dict, const Metadata& metadata,
                                        bool is_coordinator) {
  flat_.clear();
  by_key_.clear();
  missing_.clear();
  unexpected_.clear();
  converted_.clear();
  from_checkpoint_.clear();
  renamed_.clear();
  walk_dict(state_dict, [&](const std::string& key, Value& v, const ObjectPath&) {
    if (!flat_.emplace(key, &v).second)
      throw InvalidArgumentError("flattened key '" + key + "' comes from two places");
  });
  if (!options_.rename.empty()) {
    renamed_.reserve(metadata.state_dict_metadata.size());
    for (const auto& kv : metadata.state_dict_metadata) {
      renamed_.push_back(renamed_key(kv.first, options_.rename));
      auto [it, fresh] = from_checkpoint_.emplace(renamed_.back(), kv.first);
      if (!fresh)
        throw InvalidArgumentError("the key mapping gives two checkpoint keys, '" + it->second +
                                   "' and '" + kv.first + "', the same name '" + renamed_.back() +
                                   "'");
    }
  }
  metadata_ = &metadata;
  is_coordinator_ = is_coordinator;
}

const std::string* DefaultLoadPlanner::checkpoint_key(const std::string& key) const {
  if (options_.rename.empty()) return metadata_->state_dict_metadata.count(key) ? &key : nullptr;
  auto it = from_checkpoint_.find(key);
  return it == from_checkpoint_.end() ? nullptr : &it->second;
}

void DefaultLoadPlanner::plan_tensor(const std::string& key, const Value& dest,
                                     const TensorStorageMetadata& saved, LoadPlan& plan,
                                     std::vector<std::string>& problems) {
  auto saved_desc = [&] {
    return std::string(dtype_name(saved.properties.dtype)) + shape_str(saved.size);
  };
  auto problem = [&](const std::string& what) { problems.push_back("'" + key + "': " + what); };
  // (`saved` is the checkpoint's entry of `key`: without renames, the same name.)
  const std::string& saved_key = options_.rename.empty() ? key : *checkpoint_key(key);
  // The reads of the destination box at `offsets` of `sizes`, from every
  // saved chunk it shares elements with.
  auto add_reads = [&](const std::vector<int64_t>& offsets, at::IntArrayRef sizes) {
    for (const auto& chunk : saved.chunks) {
      ReadItem item;
      item.type = LoadItemType::kTensor;
      if (!intersect(offsets, sizes, chunk, item)) continue;
      item.dest_index = MetadataIndex(key, offsets);
      item.storage_index = MetadataIndex(saved_key, chunk.offsets);
      plan.items.push_back(std::move(item));
    }
  };
  auto check_dtype = [&](at::ScalarType dt, at::IntArrayRef dest_size) {
    if (dt == saved.properties.dtype) return true;
    if (!options_.allow_dtype_conversion) {
      problem("dtype mismatch: checkpoint " + saved_desc() + ", destination " + dtype_name(dt) +
              shape_str(dest_size.vec()));
      return false;
    }
    converted_[key] = saved.properties.dtype;
    return true;
  };
  if (dest.is_tensor()) {
    // One box, the whole tensor (the common case: no box list to build or check).
    const at::Tensor& t = dest.tensor();
    if (!t.defined()) return problem("the destination tensor is undefined");
    const at::IntArrayRef dest_size = t.sizes();
    if (dest_size != at::IntArrayRef(saved.size))
      return problem("shape mismatch: checkpoint " + saved_desc() + ", destination " +
                     shape_str(dest_size.vec()));
    if (!check_dtype(t.scalar_type(), dest_size)) return;
    add_reads(std::vector<int64_t>(dest_size.size(), 0), dest_size);
    return;
  }
  // The destination boxes: each local shard.
  Boxes boxes;
  std::vector<int64_t> dest_size;
  if (dest.is_sharded()) {
    // Read through const access: a mutable one would give the working copy
    // a ShardedTensor of its own (copy on write) and the load would then
    // replace the caller's.
    const ShardedTensor& st = std::as_const(dest).sharded();
    dest_size = st.global_size;
    for (const Shard& s : st.local_shards) boxes.emplace_back(s.offsets, s.tensor);
  } else {
    return problem("the checkpoint holds tensor " + saved_desc() + ", the destination is a " +
                   describe(dest));
  }
  if (dest_size != saved.size)
    return problem("shape mismatch: checkpoint " + saved_desc() + ", destination " +
                   shape_str(dest_size));
  for (const auto& box : boxes) {
    if (!box.second.defined()) return problem("a destination shard is undefined");
    if (!check_dtype(box.second.scalar_type(), dest_size)) return;
  }
  const std::string bad = check_boxes(boxes, dest_size);
  if (!bad.empty()) return problem(bad);
  for (const auto& [offsets, tensor] : boxes) add_reads(offsets, tensor.sizes());
}

LoadPlan DefaultLoadPlanner::create_local_plan() {
  LoadPlan plan;
  plan.items.reserve(flat_.size());
  std::vector<std::string> problems;
  const auto& entries = metadata_->state_dict_metadata;
  const bool excluding = !options_.exclude.empty();
  // Without renames both maps are in the same key order: each key's entry
  // is found by walking the checkpoint's alongside (no search per key).
  auto cursor = entries.begin();
  for (const auto& [key, dest] : flat_) {
    if (excluding && key_matches(key, options_.exclude)) continue;
    auto it = entries.end();
    const std::string* saved_key = nullptr;
    if (options_.rename.empty()) {
      while (cursor != entries.end() && cursor->first < key) ++cursor;
      if (cursor != entries.end() && cursor->first == key) {
        it = cursor;
        saved_key = &key;
      }
    } else if ((saved_key = checkpoint_key(key))) {
      it = entries.find(*saved_key);
    }
    if (!saved_key) {
      missing_.push_back(key);
      continue;
    }
    if (const auto* saved = std::get_if<TensorStorageMetadata>(&it->second)) {
      plan_tensor(key, *dest, *saved, plan, problems);
      continue;
    }
    if (dest->is_tensor() || dest->is_sharded()) {
      problems.push_back("'" + key +
                         "': the checkpoint holds a plain value, the destination is a " +
                         describe(*dest));
      continue;
    }
    ReadItem item;
    item.type = LoadItemType::kByteIO;
    item.dest_index = MetadataIndex(key);
    item.storage_index = MetadataIndex(*saved_key);
    plan.items.push_back(std::move(item));
  }
  // One walk over both (sorted) maps: the checkpoint's keys this rank holds
  // or excludes, and the others (unexpected here).
  // (With renames, a lookup of each checkpoint key's destination name.)
  std::string bits((entries.size() + 7) / 8, '\0');
  auto held = flat_.begin();
  size_t i = 0;
  for (auto e = entries.begin(); e != entries.end(); ++e, ++i) {
    bool wanted;
    if (renamed_.empty()) {
      while (held != flat_.end() && held->first < e->first) ++held;
      wanted = (held != flat_.end() && held->first == e->first) ||
               (excluding && key_matches(e->first, options_.exclude));
    } else {
      const std::string& name = renamed_[i];
      wanted = flat_.count(name) || (excluding && key_matches(name, options_.exclude));
    }
    if (wanted)
      bits[i / 8] = static_cast<char>(bits[i / 8] | (1 << (i % 8)));
    else
      unexpected_.push_back(e->first);
  }
  if (!problems.empty()) {
    std::string msg =
        std::to_string(problems.size()) + " key(s) of the state dict do not match the checkpoint:";
    for (size_t p = 0; p < std::min<size_t>(problems.size(), 20); ++p)
      msg += "\n    " + problems[p];
    throw PlanMismatchError(msg);
  }
  plan.planner_data = encode_request(options_.strict, missing_, bits, entries.size());
  return plan;
}

std::vector<LoadPlan> DefaultLoadPlanner::create_global_plan(std::vector<LoadPlan> all_plans) {
  const auto& entries = metadata_->state_dict_metadata;
  std::vector<Request> requests(all_plans.size());
  for (size_t r = 0; r < all_plans.size(); ++r)
    if (!decode_request(all_plans[r].planner_data, requests[r]))
      return all_plans;  // not DefaultLoadPlanner's plans: each rank judges its keys (finish_plan)
  std::string any((entries.size() + 7) / 8, '\0');
  bool strict = false;
  std::vector<std::vector<std::string>> missing(all_plans.size());
  for (size_t r = 0; r < requests.size(); ++r) {
    if (requests[r].n_keys != entries.size())
      throw Error(ErrorCode::kInternal, "rank " + std::to_string(r) + " planned the load for " +
                                            std::to_string(requests[r].n_keys) +
                                            " keys, the checkpoint has " +
                                            std::to_string(entries.size()));
    for (size_t b = 0; b < any.size(); ++b)
      any[b] = static_cast<char>(any[b] | requests[r].bits[b]);
    strict |= requests[r].strict;
    missing[r] = std::move(requests[r].missing);
  }
  std::vector<std::string> unexpected;
  size_t i = 0;
  for (auto e = entries.begin(); e != entries.end(); ++e, ++i)
    if (!(static_cast<uint8_t>(any[i / 8]) & (1 << (i % 8)))) unexpected.push_back(e->first);
  const bool any_missing =
      std::any_of(missing.begin(), missing.end(), [](const auto& m) { return !m.empty(); });
  if (strict && (any_missing || !unexpected.empty()))
    throw PlanMismatchError(strict_message(missing, unexpected));
  const std::string verdict = encode_verdict(unexpected);
  for (auto& p : all_plans) p.planner_data = verdict;
  return all_plans;
}

LoadPlan DefaultLoadPlanner::finish_plan(LoadPlan central_plan) {
  std::vector<std::string> unexpected;
  if (decode_verdict(central_plan.planner_data, unexpected)) {
    unexpected_ = std::move(unexpected);
  } else if (options_.strict && (!missing_.empty() || !unexpected_.empty())) {
    // The global plan was not DefaultLoadPlanner's: this rank's keys alone.
    throw PlanMismatchError(strict_message({missing_}, unexpected_));
  }
  by_key_.clear();
  by_key_.reserve(flat_.size());
  for (const auto& kv : flat_) by_key_.emplace(kv.first, kv.second);
  return central_plan;
}

Value* DefaultLoadPlanner::destination(const MetadataIndex& index) const {
  if (auto hit = by_key_.find(index.fqn); hit != by_key_.end()) return hit->second;
  auto it = flat_.find(index.fqn);
  if (it == flat_.end()) throw InvalidArgumentError("no destination for " + to_string(index));
  return it->second;
}

void DefaultLoadPlanner::load_bytes(const ReadItem& item, const Bytes& value) {
  *destination(item.dest_index) =
      decode_plain_value(value.data, "plain value of key '" + item.dest_index.fqn + "'");
}

at::Tensor DefaultLoadPlanner::destination_view(const ReadItem& item) const {
  const Value* dest = destination(item.dest_index);
  at::Tensor t;
  if (dest->is_sharded()) {
    for (const Shard& s : dest->sharded().local_shards)  // const: see above
      if (s.offsets == item.dest_index.offset) t = s.tensor;
    if (!t.defined())
      throw InvalidArgumentError("no local shard for " + to_string(item.dest_index));
  } else {
    t = dest->tensor();
  }
  const size_t n = item.lengths.size();
  bool fits = t.defined() && static_cast<size_t>(t.dim()) == n && item.dest_offsets.size() == n;
  for (size_t d = 0; fits && d < n; ++d)
    fits = item.dest_offsets[d] >= 0 && item.lengths[d] >= 0 && item.dest_offsets[d] <= t.size(d) &&
           item.lengths[d] <= t.size(d) - item.dest_offsets[d];
  if (!fits)
    throw InvalidArgumentError("the read for " + to_string(item.dest_index) + " of the box at " +
                               shape_str(item.dest_offsets) + " of size " +
                               shape_str(item.lengths) + " does not fit its destination, a " +
                               describe(Value(t)));
  for (size_t d = 0; d < n; ++d) {
    if (item.dest_offsets[d] != 0 || item.lengths[d] != t.size(d))
      t = t.narrow(static_cast<int64_t>(d), item.dest_offsets[d], item.lengths[d]);
  }
  return t;
}

at::Tensor DefaultLoadPlanner::resolve_tensor(const ReadItem& item) {
  at::Tensor view = destination_view(item);
  if (converted_.empty()) return view;
  auto conv = converted_.find(item.dest_index.fqn);
  if (conv != converted_.end()) return at::empty(item.lengths, view.options().dtype(conv->second));
  return view;
}

void DefaultLoadPlanner::commit_tensor(const ReadItem& item, at::Tensor& tensor) {
  if (!converted_.empty() && converted_.count(item.dest_index.fqn)) {
    at::NoGradGuard no_grad;
    destination_view(item).copy_(tensor);
  }
}

StateDict state_dict_from_metadata(const Metadata& metadata) {
  return state_dict_from_metadata(metadata, {});
}

namespace {

// A tensor for load_all to fill. Large ones are mapped with MAP_POPULATE:
// the kernel faults the pages in at once, ~1.3 GB/s on the machines this
// was measured on, where first touch by the reads runs at ~0.2 GB/s.
at::Tensor empty_for_load(const std::vector<int64_t>& sizes, at::ScalarType dtype) {
  int64_t numel = 1;
  for (int64_t s : sizes) numel *= s;
  const size_t bytes = static_cast<size_t>(numel) * c10::elementSize(dtype);
  if (bytes < (size_t{1} << 20)) return at::empty(sizes, at::TensorOptions().dtype(dtype));
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                 -1, 0);
  if (p == MAP_FAILED) return at::empty(sizes, at::TensorOptions().dtype(dtype));
  return at::from_blob(
      p, sizes, [bytes](void* q) { munmap(q, bytes); }, at::TensorOptions().dtype(dtype));
}

// The path of renamed key `to_key` (was `key` at `path`): the rule's new
// prefix, split at its dots, in place of the path elements its old prefix
// covered; a one-element path when the prefixes do not fall on dots.
ObjectPath renamed_path(const std::string& key, const ObjectPath& path, const std::string& to_key,
                        const std::vector<KeyRename>& rename) {
  if (to_key == key) return path;
  for (const KeyRename& r : rename) {
    if (key.compare(0, r.from.size(), r.from) != 0) continue;
    const std::string from =
        !r.from.empty() && r.from.back() == '.' ? r.from.substr(0, r.from.size() - 1) : r.from;
    const std::string to =
        !r.to.empty() && r.to.back() == '.' ? r.to.substr(0, r.to.size() - 1) : r.to;
    // How many leading elements `from` covers.
    size_t k = 0;
    bool found = from.empty();
    std::string joined;
    while (!found && k < path.size()) {
      const PathElement& e = path[k++];
      joined += (joined.empty() ? "" : ".") + (e.is_index ? std::to_string(e.index) : e.key);
      found = joined == from;
      if (joined.size() >= from.size()) break;
    }
    ObjectPath out;
    if (found) {
      size_t start = 0;
      while (!to.empty() && start <= to.size()) {
        const size_t dot = to.find('.', start);
        out.push_back(PathElement{false, to.substr(start, dot - start), 0});
        if (dot == std::string::npos) break;
        start = dot + 1;
      }
      out.insert(out.end(), path.begin() + static_cast<long>(k), path.end());
      if (!out.empty() && path_string(out) == to_key) return out;
    }
    break;
  }
  return ObjectPath{PathElement{false, to_key, 0}};
}

}  // namespace

StateDict state_dict_from_metadata(const Metadata& metadata, const std::vector<KeyRename>& rename,
                                   const std::vector<std::string>& drop) {
  Dict flat;
  FlattenMapping mapping = decode_flatten_mapping(metadata.planner_data);
  FlattenMapping renamed;
  for (const auto& [key, entry] : metadata.state_dict_metadata) {
    const std::string name = renamed_key(key, rename);
    if (!drop.empty() && std::find(drop.begin(), drop.end(), name) != drop.end()) continue;
    if (const auto* t = std::get_if<TensorStorageMetadata>(&entry)) {
      flat.emplace(name, empty_for_load(t->size, t->properties.dtype));
    } else {
      flat.emplace(name, Value());
    }
    if (!rename.empty()) {
      auto m = mapping.find(key);
      renamed[name] =
          renamed_path(key, m != mapping.end() ? m->second : ObjectPath{PathElement{false, key, 0}},
                       name, rename);
    }
  }
  return unflatten_state_dict(flat, rename.empty() ? mapping : renamed);
}

}  // namespace dcp
