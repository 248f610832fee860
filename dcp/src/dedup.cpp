// Dedup of the global save plan: an item (key and chunk) that several ranks
// save is kept in one rank's plan, the largest first onto the least-loaded
// holder; the other holders are asked for its checksum (replica_check.cpp).
#include "dcp/default_planner.h"

#include <algorithm>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace dcp {

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
    // stay ascending within each offset. Sharded tensors usually come with
    // offsets ascending by rank already (row sharding): no sort then.
    auto by_offset = [&](const auto& a, const auto& b) {
      return item(a).index.offset < item(b).index.offset;
    };
    if (!std::is_sorted(group.begin(), group.end(), by_offset))
      std::stable_sort(group.begin(), group.end(), by_offset);
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
}  // namespace dcp
