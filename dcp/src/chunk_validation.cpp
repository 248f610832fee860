#include "chunk_validation.h"

#include <algorithm>
#include <bitset>

#include "dcp/error.h"

namespace dcp {
namespace internal {

std::string shape_str(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

int64_t checked_volume(const std::vector<int64_t>& sizes) {
  for (int64_t s : sizes)
    if (s == 0) return 0;
  int64_t n = 1;
  for (int64_t s : sizes)
    if (s < 0 || __builtin_mul_overflow(n, s, &n)) return -1;
  return n;
}

namespace {

std::string chunk_str(const ChunkStorageMetadata& c) {
  return "chunk at " + shape_str(c.offsets) + " of size " + shape_str(c.sizes);
}

// "rank 1", "ranks 0, 2": whose plans hold `key` at `offsets`. Only for
// messages: a scan of every plan.
std::string holders(const std::vector<SavePlan>& plans, const std::string& key,
                    const std::vector<int64_t>& offsets) {
  std::vector<size_t> ranks;
  for (size_t r = 0; r < plans.size(); ++r)
    for (const auto& item : plans[r].items)
      if (item.index.fqn == key && item.index.offset == offsets) {
        ranks.push_back(r);
        break;
      }
  if (ranks.empty()) return "rank ?";
  std::string s = ranks.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < ranks.size(); ++i) s += (i ? ", " : "") + std::to_string(ranks[i]);
  return s;
}

bool boxes_overlap(const ChunkStorageMetadata& a, const ChunkStorageMetadata& b) {
  for (size_t d = 0; d < a.offsets.size(); ++d) {
    if (a.offsets[d] >= b.offsets[d] + b.sizes[d] || b.offsets[d] >= a.offsets[d] + a.sizes[d])
      return false;
  }
  return true;
}

// Two chunks that start at the same offsets would be one stored item (the
// offsets name it): refused even when one of them is empty.
void check_distinct_offsets(const std::string& fqn, const TensorStorageMetadata& t,
                            const std::vector<SavePlan>& plans) {
  std::vector<const ChunkStorageMetadata*> all;
  all.reserve(t.chunks.size());
  for (const auto& c : t.chunks) all.push_back(&c);
  std::sort(all.begin(), all.end(), [](const auto* a, const auto* b) {
    return a->offsets != b->offsets ? a->offsets < b->offsets : a->sizes < b->sizes;
  });
  for (size_t i = 1; i < all.size(); ++i)
    if (all[i]->offsets == all[i - 1]->offsets)
      throw InvalidArgumentError("key '" + fqn + "': two chunks start at " +
                                 shape_str(all[i]->offsets) + " (sizes " +
                                 shape_str(all[i - 1]->sizes) + " and " + shape_str(all[i]->sizes) +
                                 ", " + holders(plans, fqn, all[i]->offsets) + ")");
}

// The dimension along which the chunks have the most distinct offsets.
size_t sweep_dim(const std::vector<const ChunkStorageMetadata*>& chunks, size_t ndim) {
  thread_local std::vector<int64_t> offs;
  size_t best_dim = 0, best_distinct = 0;
  for (size_t d = 0; d < ndim; ++d) {
    offs.clear();
    for (const auto* c : chunks) offs.push_back(c->offsets[d]);
    std::sort(offs.begin(), offs.end());
    const size_t distinct = std::unique(offs.begin(), offs.end()) - offs.begin();
    if (distinct > best_distinct) best_distinct = distinct, best_dim = d;
  }
  return best_dim;
}

}  // namespace

void check_write_item(const WriteItem& item, size_t rank) {
  // Messages are made only on failure: this runs for every item of a save.
  auto where = [&] { return "key '" + item.index.fqn + "' on rank " + std::to_string(rank); };
  auto fail = [&](const std::string& what) { throw InvalidArgumentError(where() + ": " + what); };
  if (item.type == WriteItemType::kByteIO) {
    if (!item.index.offset.empty())
      fail("a plain value item has chunk offsets " + shape_str(item.index.offset));
    return;
  }
  if (!item.tensor_data)
    fail(std::string("a ") + to_string(item.type) + " item has no tensor data");
  const TensorWriteData& td = *item.tensor_data;
  const ChunkStorageMetadata& c = td.chunk;
  thread_local std::bitset<256> supported;  // dtypes already checked
  const auto dtype = static_cast<uint8_t>(td.properties.dtype);
  if (!supported[dtype]) {
    check_supported_dtype(td.properties.dtype, where());
    supported.set(dtype);
  }
  for (int64_t s : td.size)
    if (s < 0) fail("the tensor size " + shape_str(td.size) + " is negative");
  if (checked_volume(td.size) < 0)
    fail("the tensor size " + shape_str(td.size) + " has more elements than int64 counts");
  if (c.offsets.size() != td.size.size() || c.sizes.size() != td.size.size())
    fail("the chunk has offsets " + shape_str(c.offsets) + " and sizes " + shape_str(c.sizes) +
         ", the tensor " + shape_str(td.size) + " has " + std::to_string(td.size.size()) +
         " dimension(s)");
  if (item.index.offset != c.offsets)
    fail("the item is named by offsets " + shape_str(item.index.offset) +
         " but its chunk starts at " + shape_str(c.offsets));
  for (size_t d = 0; d < td.size.size(); ++d)
    if (c.offsets[d] < 0 || c.sizes[d] < 0 || c.offsets[d] > td.size[d] ||
        c.sizes[d] > td.size[d] - c.offsets[d])
      fail(chunk_str(c) + " lies outside the tensor " + shape_str(td.size));
}

// A sweep along the dimension with the most distinct offsets keeps the
// overlap check near O(n log n) for row, column and block layouts (a
// pairwise check is O(n^2): pytorch/pytorch#163548).
void validate_chunks(const std::string& fqn, const TensorStorageMetadata& t,
                     const std::vector<SavePlan>& plans) {
  const size_t ndim = t.size.size();
  // Scratch space reused across the (many) tensors of one plan.
  thread_local std::vector<const ChunkStorageMetadata*> nonempty, active;
  nonempty.clear();
  active.clear();
  bool any_empty = false;
  for (const auto& c : t.chunks) {
    if (checked_volume(c.sizes) > 0)
      nonempty.push_back(&c);
    else
      any_empty = true;
  }
  if (any_empty) check_distinct_offsets(fqn, t, plans);
  if (ndim == 0 && nonempty.size() > 1)
    throw InvalidArgumentError("key '" + fqn + "': a 0-dim tensor saved twice (" +
                               holders(plans, fqn, {}) + ")");
  if (nonempty.size() > 1 && ndim > 0) {
    const size_t dim = sweep_dim(nonempty, ndim);
    std::sort(nonempty.begin(), nonempty.end(),
              [&](const auto* a, const auto* b) { return a->offsets[dim] < b->offsets[dim]; });
    for (const auto* c : nonempty) {
      const int64_t start = c->offsets[dim];
      active.erase(
          std::remove_if(active.begin(), active.end(),
                         [&](const auto* a) { return a->offsets[dim] + a->sizes[dim] <= start; }),
          active.end());
      for (const auto* a : active)
        if (boxes_overlap(*a, *c))
          throw InvalidArgumentError("key '" + fqn + "': " + chunk_str(*a) + " (" +
                                     holders(plans, fqn, a->offsets) + ") and " + chunk_str(*c) +
                                     " (" + holders(plans, fqn, c->offsets) + ") overlap");
      active.push_back(c);
    }
  }
  // Disjoint boxes inside the tensor: the sum cannot overflow.
  int64_t covered = 0;
  for (const auto* c : nonempty) covered += checked_volume(c->sizes);
  const int64_t total = checked_volume(t.size);
  if (covered != total)
    throw InvalidArgumentError("key '" + fqn + "': the saved chunks cover " +
                               std::to_string(covered) + " of " + std::to_string(total) +
                               " elements of " + shape_str(t.size) +
                               " (every element must be saved by exactly one rank)");
}

}  // namespace internal
}  // namespace dcp
