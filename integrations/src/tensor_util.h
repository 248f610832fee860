// Helpers shared by the adapters' sources: how tensors and shapes are named
// in error messages.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "dcp/libtorch/module.h"
#include "dcp/metadata.h"
#include "dcp/value.h"

namespace dcp {
namespace internal {

// "[3, 4]"
inline std::string shape_string(at::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

// "float32[3, 4]"
inline std::string describe_tensor(const at::Tensor& t) {
  return std::string(dtype_name(t.scalar_type())) + shape_string(t.sizes());
}

// "<who>: N key(s) do not match:\n    problem\n    ..." (at most 20 shown).
inline std::string mismatch_message(const std::string& who,
                                    const std::vector<std::string>& problems) {
  std::string msg = who + ": " + std::to_string(problems.size()) + " key(s) do not match:";
  for (size_t i = 0; i < problems.size() && i < 20; ++i) msg += "\n    " + problems[i];
  if (problems.size() > 20) msg += "\n    ...";
  return msg;
}

// The part of `v` that belongs in `dest`, a local tensor that is the piece
// `spec` of a global tensor (spec null: the whole tensor, at offsets 0):
//   - a tensor of the global shape: its slice at the offsets (no copy);
//   - a ShardedTensor of the global shape: its local shard at the offsets.
// Returns an undefined tensor and sets `problem` (naming `key`) when there is
// no such part. The caller checks dtype and shape against `dest`.
inline at::Tensor local_piece(const Value& v, const libtorch::ShardSpec* spec,
                              const at::Tensor& dest, const std::string& key,
                              std::string& problem) {
  const std::vector<int64_t> offsets = spec ? spec->offsets : std::vector<int64_t>(dest.dim(), 0);
  const std::vector<int64_t> global = spec ? spec->global_size : dest.sizes().vec();
  if (v.is_tensor()) {
    at::Tensor src = v.tensor();
    if (!src.defined()) {
      problem = "'" + key + "': the tensor is undefined";
      return {};
    }
    if (!spec) return src;
    if (src.sizes().vec() != global || offsets.size() != static_cast<size_t>(dest.dim())) {
      problem = "'" + key + "': shape mismatch: state dict " + describe_tensor(src) +
                ", global shape " + shape_string(global);
      return {};
    }
    for (int64_t d = 0; d < dest.dim(); ++d) src = src.narrow(d, offsets[d], dest.size(d));
    return src;
  }
  if (v.is_sharded()) {
    const ShardedTensor& st = v.sharded();
    if (st.global_size != global) {
      problem = "'" + key + "': global shape mismatch: state dict " + shape_string(st.global_size) +
                ", expected " + shape_string(global);
      return {};
    }
    for (const Shard& s : st.local_shards)
      if (s.offsets == offsets) return s.tensor;
    problem = "'" + key + "': the state dict has no local shard at " + shape_string(offsets);
    return {};
  }
  problem = "'" + key + "': the state dict holds a " + describe(v) + ", not a tensor";
  return {};
}

// `t` as this rank's piece `spec` (a ShardedTensor), or as it is (spec null).
inline Value as_piece(const at::Tensor& t, const libtorch::ShardSpec* spec) {
  if (!spec) return t;
  return ShardedTensor{spec->global_size, {Shard{t, spec->offsets}}};
}

}  // namespace internal
}  // namespace dcp
