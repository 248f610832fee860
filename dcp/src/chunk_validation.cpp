#include "chunk_validation.h"

#include <algorithm>

#include "dcp/error.h"

namespace dcp {

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

namespace {

bool boxes_overlap(const ChunkStorageMetadata& a, const ChunkStorageMetadata& b) {
  for (size_t d = 0; d < a.offsets.size(); ++d) {
    if (a.offsets[d] >= b.offsets[d] + b.sizes[d] || b.offsets[d] >= a.offsets[d] + a.sizes[d])
      return false;
  }
  return true;
}

}  // namespace

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

}  // namespace dcp
