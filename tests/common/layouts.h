// Random layouts for the layout tests: tilings of tiny tensors (dimensions
// of size zero, row, column and block splits, empty boxes), boxes to load
// into, and layouts broken on purpose. Everything is drawn from a seeded
// generator: a failing case is reproduced by its seed.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "dcp/dcp.h"

namespace dcp {
namespace testing {

using Rng = std::mt19937_64;

struct Box {
  std::vector<int64_t> offsets, sizes;
  bool operator==(const Box& o) const { return offsets == o.offsets && sizes == o.sizes; }
};

// "[4, 0, 3]", "[0, 0]+[2, 3]" (offsets+sizes), "{box box ...}".
std::string dims_str(const std::vector<int64_t>& v);
std::string box_str(const Box& b);
std::string boxes_str(const std::vector<Box>& boxes);

// A uniform integer in [lo, hi].
int64_t uniform(Rng& rng, int64_t lo, int64_t hi);
// True with probability p.
bool chance(Rng& rng, double p);

// 0 to 3 dimensions of 0 to 4 elements; a dimension is 0 one time in five.
std::vector<int64_t> random_shape(Rng& rng);
// One of the dtypes dcp++ saves (floating, integer, bool, complex).
at::ScalarType random_dtype(Rng& rng);

// Boxes that cover `shape` exactly once, by guillotine cuts along random
// dimensions (rows, columns, blocks, uneven pieces), with empty boxes among
// them (each at offsets no other box has). A 0-dim shape gives one box.
std::vector<Box> random_tiling(Rng& rng, const std::vector<int64_t>& shape);

// Boxes inside `shape` at distinct offsets that may overlap, leave holes or
// be empty: what one rank may load into.
std::vector<Box> random_boxes(Rng& rng, const std::vector<int64_t>& shape);

// `boxes` with one change that may break them as a save layout (a box
// dropped, grown, shrunk, shifted, one added, one at taken offsets with
// another size) or none; `what` says which.
std::vector<Box> perturbed(Rng& rng, std::vector<Box> boxes, const std::vector<int64_t>& shape,
                           std::string& what);

// Whether boxes of these shapes, saved by one rank (exact copies count once),
// are a layout a load can read back: each box inside the tensor, one box per
// offset, every element in exactly one box.
bool is_valid_layout(const std::vector<Box>& boxes, const std::vector<int64_t>& shape);

// The part of `full` in `box`.
at::Tensor piece(const at::Tensor& full, const Box& box);

// A ShardedTensor of `full`'s pieces in `boxes`; with `blank`, of tensors of
// the same shapes holding other bytes (a destination to load into).
ShardedTensor sharded(const at::Tensor& full, const std::vector<Box>& boxes, bool blank);

// The same dtype, shape and bytes.
bool same_bits(const at::Tensor& a, const at::Tensor& b);

// "" when every element of `loaded` (a tensor or sharded tensor) has the bits
// of `full` at its place; otherwise what differs.
std::string compare_loaded(const Value& loaded, const at::Tensor& full);

}  // namespace testing
}  // namespace dcp
