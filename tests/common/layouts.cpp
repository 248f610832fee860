#include "common/layouts.h"

#include <algorithm>
#include <cstring>
#include <functional>

#include "common/test_util.h"

namespace dcp {
namespace testing {

std::string dims_str(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

namespace {

int64_t volume(const std::vector<int64_t>& sizes) {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  return n;
}

// Drops the boxes that start where an earlier one starts.
std::vector<Box> distinct_offsets(const std::vector<Box>& boxes) {
  std::vector<Box> out;
  for (const Box& b : boxes)
    if (std::none_of(out.begin(), out.end(), [&](const Box& o) { return o.offsets == b.offsets; }))
      out.push_back(b);
  return out;
}
}  // namespace

std::string box_str(const Box& b) { return dims_str(b.offsets) + "+" + dims_str(b.sizes); }

std::string boxes_str(const std::vector<Box>& boxes) {
  std::string s;
  for (const Box& b : boxes) s += (s.empty() ? "" : " ") + box_str(b);
  return "{" + s + "}";
}

int64_t uniform(Rng& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

bool chance(Rng& rng, double p) { return std::bernoulli_distribution(p)(rng); }

std::vector<int64_t> random_shape(Rng& rng) {
  const int64_t r = uniform(rng, 0, 9);
  const int64_t ndim = r == 0 ? 0 : r < 3 ? 1 : r < 7 ? 2 : 3;
  std::vector<int64_t> shape;
  for (int64_t d = 0; d < ndim; ++d) shape.push_back(chance(rng, 0.2) ? 0 : uniform(rng, 1, 4));
  return shape;
}

at::ScalarType random_dtype(Rng& rng) {
  static const at::ScalarType kinds[] = {at::kFloat, at::kDouble, at::kHalf,        at::kBFloat16,
                                         at::kChar,  at::kLong,   at::kByte,        at::kBool,
                                         at::kInt,   at::kShort,  at::kComplexFloat};
  return kinds[uniform(rng, 0, std::size(kinds) - 1)];
}

std::vector<Box> random_tiling(Rng& rng, const std::vector<int64_t>& shape) {
  std::vector<Box> out;
  std::function<void(const Box&, int)> cut = [&](const Box& b, int depth) {
    std::vector<size_t> dims;
    for (size_t d = 0; d < b.sizes.size(); ++d)
      if (b.sizes[d] >= 1) dims.push_back(d);
    if (dims.empty() || depth >= 4 || chance(rng, 0.3)) {
      out.push_back(b);
      return;
    }
    const size_t d = dims[uniform(rng, 0, dims.size() - 1)];
    // Mostly a cut inside; sometimes at the end, which leaves an empty box.
    const int64_t at =
        b.sizes[d] == 1 || chance(rng, 0.15) ? b.sizes[d] : uniform(rng, 1, b.sizes[d] - 1);
    Box lo = b, hi = b;
    lo.sizes[d] = at;
    hi.offsets[d] += at;
    hi.sizes[d] -= at;
    cut(lo, depth + 1);
    cut(hi, depth + 1);
  };
  cut(Box{std::vector<int64_t>(shape.size(), 0), shape}, 0);
  // Empty boxes may start where another box starts: those go.
  std::vector<Box> kept;
  for (const Box& b : out) {
    const bool taken =
        volume(b.sizes) == 0 && std::any_of(out.begin(), out.end(), [&](const Box& o) {
          return &o != &b && o.offsets == b.offsets && volume(o.sizes) > 0;
        });
    if (!taken) kept.push_back(b);
  }
  return distinct_offsets(kept);
}

std::vector<Box> random_boxes(Rng& rng, const std::vector<int64_t>& shape) {
  const int64_t kind = uniform(rng, 0, 9);
  if (kind < 2) return {Box{std::vector<int64_t>(shape.size(), 0), shape}};
  if (kind < 6) return random_tiling(rng, shape);
  std::vector<Box> out;
  for (int64_t n = uniform(rng, 1, 4); n > 0; --n) {
    Box b;
    for (int64_t s : shape) {
      b.offsets.push_back(uniform(rng, 0, s));
      b.sizes.push_back(uniform(rng, 0, s - b.offsets.back()));
    }
    out.push_back(b);
  }
  return distinct_offsets(out);
}

std::vector<Box> perturbed(Rng& rng, std::vector<Box> boxes, const std::vector<int64_t>& shape,
                           std::string& what) {
  const size_t ndim = shape.size();
  const size_t i = uniform(rng, 0, boxes.size() - 1);
  const size_t d = ndim ? uniform(rng, 0, ndim - 1) : 0;
  switch (uniform(rng, 0, 7)) {
    case 0:
      what = "unchanged";
      break;
    case 1:
      if (boxes.size() < 2) {
        what = "unchanged (one box)";
        break;
      }
      what = "box " + box_str(boxes[i]) + " dropped";
      boxes.erase(boxes.begin() + i);
      break;
    case 2:
      if (!ndim) break;
      what = "box " + box_str(boxes[i]) + " grown in dim " + std::to_string(d);
      ++boxes[i].sizes[d];
      break;
    case 3:
      if (!ndim || boxes[i].sizes[d] == 0) break;
      what = "box " + box_str(boxes[i]) + " shrunk in dim " + std::to_string(d);
      --boxes[i].sizes[d];
      break;
    case 4:
      if (!ndim) break;
      what = "box " + box_str(boxes[i]) + " shifted in dim " + std::to_string(d);
      boxes[i].offsets[d] += chance(rng, 0.5) ? 1 : -1;
      break;
    case 5: {
      Box b;
      for (int64_t s : shape) {
        b.offsets.push_back(uniform(rng, -1, s));
        b.sizes.push_back(
            uniform(rng, 0, std::max<int64_t>(s - std::max<int64_t>(b.offsets.back(), 0), 0) + 1));
      }
      what = "box " + box_str(b) + " added";
      boxes.push_back(b);
      break;
    }
    case 6: {
      if (!ndim) break;
      Box b = boxes[i];
      b.sizes[d] = b.sizes[d] > 0 && chance(rng, 0.5) ? b.sizes[d] - 1 : b.sizes[d] + 1;
      what = "box " + box_str(b) + " added at the offsets of " + box_str(boxes[i]);
      boxes.push_back(b);
      break;
    }
    default:
      what = "box " + box_str(boxes[i]) + " given twice";
      boxes.push_back(boxes[i]);
      break;
  }
  if (what.empty()) what = "unchanged";
  return boxes;
}

bool is_valid_layout(const std::vector<Box>& boxes, const std::vector<int64_t>& shape) {
  std::vector<Box> distinct;
  for (const Box& b : boxes)
    if (std::find(distinct.begin(), distinct.end(), b) == distinct.end()) distinct.push_back(b);
  for (const Box& b : distinct) {
    if (b.offsets.size() != shape.size() || b.sizes.size() != shape.size()) return false;
    for (size_t d = 0; d < shape.size(); ++d)
      if (b.offsets[d] < 0 || b.sizes[d] < 0 || b.offsets[d] + b.sizes[d] > shape[d]) return false;
  }
  if (distinct_offsets(distinct).size() != distinct.size()) return false;
  // Count how often each element is covered.
  std::vector<int> count(volume(shape), 0);
  for (const Box& b : distinct) {
    const int64_t n = volume(b.sizes);
    for (int64_t k = 0; k < n; ++k) {
      int64_t rest = k, flat = 0;
      for (size_t d = shape.size(); d-- > 0;) {
        const int64_t idx = b.offsets[d] + rest % b.sizes[d];
        rest /= b.sizes[d];
        int64_t stride = 1;
        for (size_t e = d + 1; e < shape.size(); ++e) stride *= shape[e];
        flat += idx * stride;
      }
      ++count[flat];
    }
  }
  return std::all_of(count.begin(), count.end(), [](int c) { return c == 1; });
}

at::Tensor piece(const at::Tensor& full, const Box& box) {
  at::Tensor t = full;
  for (size_t d = 0; d < box.offsets.size(); ++d)
    t = t.narrow(static_cast<int64_t>(d), box.offsets[d], box.sizes[d]);
  return t;
}

ShardedTensor sharded(const at::Tensor& full, const std::vector<Box>& boxes, bool blank) {
  ShardedTensor st{full.sizes().vec(), {}};
  for (const Box& b : boxes) {
    // A box reaching outside `full` (a broken layout) gets a tensor of its
    // shape from zeros: its values never load.
    bool inside = true;
    for (size_t d = 0; d < b.offsets.size(); ++d)
      inside &= b.offsets[d] >= 0 && b.offsets[d] + b.sizes[d] <= full.size(d);
    at::Tensor t = inside ? piece(full, b).clone() : at::zeros(b.sizes, full.options());
    st.local_shards.push_back(Shard{blank ? scrambled_like(t) : t, b.offsets});
  }
  return st;
}

bool same_bits(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const at::Tensor x = a.contiguous(), y = b.contiguous();
  return x.nbytes() == 0 || std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) == 0;
}

std::string compare_loaded(const Value& loaded, const at::Tensor& full) {
  if (loaded.is_tensor())
    return same_bits(loaded.tensor(), full) ? "" : "the loaded tensor differs";
  for (const Shard& s : loaded.sharded().local_shards) {
    const Box b{s.offsets, s.tensor.sizes().vec()};
    if (!same_bits(s.tensor, piece(full, b))) return "the loaded shard " + box_str(b) + " differs";
  }
  return "";
}

}  // namespace testing
}  // namespace dcp
