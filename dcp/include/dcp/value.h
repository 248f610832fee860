// State dicts: what dcp++ saves and loads.
//
// A StateDict maps names to Values. A Value is one of:
//   - a tensor (at::Tensor, any dtype, any strides, 0-dim or empty),
//   - a ShardedTensor (a global shape and this rank's shards),
//   - a plain value (none, bool, int, double, string, raw bytes),
//   - a List or a nested Dict of Values,
//   - a Stateful object, asked for state_dict() on save and given
//     load_state_dict() after load.
//
// On save, nested dicts (and lists that hold tensors) are flattened to dotted
// keys ("model.layer1.weight"); the original paths are kept in the metadata
// so that load can rebuild the nesting.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "dcp/export.h"

namespace dcp {

class Value;
class Stateful;

using List = std::vector<Value>;
using Dict = std::map<std::string, Value>;
using StateDict = Dict;

// Raw bytes, stored as they are (DCP's BytesIO).
struct DCP_CORE_EXPORT Bytes {
  std::string data;
  bool operator==(const Bytes& o) const { return data == o.data; }
};

// One local piece of a sharded tensor: `tensor` holds the elements of the
// box that starts at `offsets` in the global tensor.
struct DCP_CORE_EXPORT Shard {
  at::Tensor tensor;
  std::vector<int64_t> offsets;
};

// The C++ form of ShardedTensor / DTensor: the global shape and this rank's
// shards. Any number of shards per rank; shards of all ranks together must
// tile the global tensor without overlap (checked at save).
struct DCP_CORE_EXPORT ShardedTensor {
  std::vector<int64_t> global_size;
  std::vector<Shard> local_shards;
};

// An object that takes part in a checkpoint through its state dict.
//
// state_dict() is called on save (its tensors may alias the object's own: they
// are read, not modified) and on load, to get the destination tensors that are
// then filled in place; load_state_dict() is called after load with the loaded
// dict, so the object can take plain values back.
class DCP_CORE_EXPORT Stateful {
 public:
  virtual ~Stateful() = default;
  virtual StateDict state_dict() = 0;
  virtual void load_state_dict(const StateDict& state_dict) = 0;
};

class DCP_CORE_EXPORT Value {
 public:
  enum class Kind {
    kNone,
    kBool,
    kInt,
    kDouble,
    kString,
    kBytes,
    kTensor,
    kSharded,
    kList,
    kDict,
    kStateful
  };

  Value() = default;
  Value(std::nullptr_t) {}
  Value(bool v) : v_(v) {}
  Value(int v) : v_(static_cast<int64_t>(v)) {}
  Value(long v) : v_(static_cast<int64_t>(v)) {}
  Value(long long v) : v_(static_cast<int64_t>(v)) {}
  Value(unsigned v) : v_(static_cast<int64_t>(v)) {}
  Value(double v) : v_(v) {}
  Value(float v) : v_(static_cast<double>(v)) {}
  Value(const char* v) : v_(std::string(v)) {}
  Value(std::string v) : v_(std::move(v)) {}
  Value(Bytes v) : v_(std::move(v)) {}
  Value(at::Tensor v) : v_(std::move(v)) {}
  Value(ShardedTensor v) : v_(std::make_shared<ShardedTensor>(std::move(v))) {}
  Value(List v) : v_(std::move(v)) {}
  Value(Dict v) : v_(std::move(v)) {}
  Value(std::shared_ptr<Stateful> v) : v_(std::move(v)) {}
  template <typename T, typename = std::enable_if_t<std::is_base_of<Stateful, T>::value>>
  Value(std::shared_ptr<T> v) : v_(std::shared_ptr<Stateful>(std::move(v))) {}

  Kind kind() const { return static_cast<Kind>(v_.index()); }
  static const char* kind_name(Kind kind);
  const char* kind_name() const { return kind_name(kind()); }

  bool is_none() const { return kind() == Kind::kNone; }
  bool is_tensor() const { return kind() == Kind::kTensor; }
  bool is_sharded() const { return kind() == Kind::kSharded; }
  bool is_list() const { return kind() == Kind::kList; }
  bool is_dict() const { return kind() == Kind::kDict; }
  bool is_stateful() const { return kind() == Kind::kStateful; }
  // True for none, bool, int, double, string and bytes.
  bool is_plain_scalar() const;

  // Typed access. Each throws InvalidArgumentError naming both kinds when the
  // Value holds something else.
  bool to_bool() const;
  int64_t to_int() const;
  double to_double() const;  // also accepts an int
  const std::string& to_string() const;
  const Bytes& to_bytes() const;
  const at::Tensor& tensor() const;
  at::Tensor& tensor();
  const ShardedTensor& sharded() const;
  // Mutable access: this Value gets its own copy of the ShardedTensor from
  // now on if it shared one with copies of it (see v_).
  ShardedTensor& mutable_sharded();
  const List& list() const;
  List& list();
  const Dict& dict() const;
  Dict& dict();
  const std::shared_ptr<Stateful>& stateful() const;

  // Structural equality: tensors compare by dtype, shape and values
  // (bit-exact, NaNs equal), Stateful objects by identity.
  bool equals(const Value& other) const;

 private:
  template <typename T>
  const T& get(Kind want) const;
  template <typename T>
  T& get(Kind want);

  // A sharded tensor is shared between copies of a Value until one of them
  // asks for it mutably (then that one gets its own copy): copying a state
  // dict of 100k sharded tensors, as flattening does, costs no allocation
  // per shard. Tensors alias their originals either way, as with at::Tensor.
  // So: read through sharded(), and do not keep a reference from
  // mutable_sharded() across a copy of the Value (the copy would see its writes).
  std::variant<std::monostate, bool, int64_t, double, std::string, Bytes, at::Tensor,
               std::shared_ptr<ShardedTensor>, List, Dict, std::shared_ptr<Stateful>>
      v_;
};

// A human-readable rendering, for errors and tools ("tensor float32[3, 4]").
DCP_CORE_EXPORT std::string describe(const Value& value);

}  // namespace dcp
