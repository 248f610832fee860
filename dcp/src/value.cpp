#include "dcp/value.h"

#include <ATen/ATen.h>

#include <sstream>

#include "dcp/error.h"
#include "dcp/metadata.h"

namespace dcp {

const char* Value::kind_name(Kind kind) {
  switch (kind) {
    case Kind::kNone:
      return "none";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kDouble:
      return "double";
    case Kind::kString:
      return "string";
    case Kind::kBytes:
      return "bytes";
    case Kind::kTensor:
      return "tensor";
    case Kind::kSharded:
      return "sharded tensor";
    case Kind::kList:
      return "list";
    case Kind::kDict:
      return "dict";
    case Kind::kStateful:
      return "stateful";
  }
  return "unknown";
}

bool Value::is_plain_scalar() const {
  switch (kind()) {
    case Kind::kNone:
    case Kind::kBool:
    case Kind::kInt:
    case Kind::kDouble:
    case Kind::kString:
    case Kind::kBytes:
      return true;
    default:
      return false;
  }
}

template <typename T>
const T& Value::get(Kind want) const {
  if (kind() != want)
    throw InvalidArgumentError(std::string("value is a ") + kind_name() + ", not a " +
                               kind_name(want));
  return std::get<T>(v_);
}
template <typename T>
T& Value::get(Kind want) {
  return const_cast<T&>(static_cast<const Value*>(this)->get<T>(want));
}

bool Value::to_bool() const { return get<bool>(Kind::kBool); }
int64_t Value::to_int() const { return get<int64_t>(Kind::kInt); }
double Value::to_double() const {
  if (kind() == Kind::kInt) return static_cast<double>(std::get<int64_t>(v_));
  return get<double>(Kind::kDouble);
}
const std::string& Value::to_string() const { return get<std::string>(Kind::kString); }
const Bytes& Value::to_bytes() const { return get<Bytes>(Kind::kBytes); }
const at::Tensor& Value::tensor() const { return get<at::Tensor>(Kind::kTensor); }
at::Tensor& Value::tensor() { return get<at::Tensor>(Kind::kTensor); }
const ShardedTensor& Value::sharded() const {
  return *get<std::shared_ptr<ShardedTensor>>(Kind::kSharded);
}
ShardedTensor& Value::mutable_sharded() {
  auto& p = get<std::shared_ptr<ShardedTensor>>(Kind::kSharded);
  if (p.use_count() > 1) p = std::make_shared<ShardedTensor>(*p);  // copy on write
  return *p;
}
const List& Value::list() const { return get<List>(Kind::kList); }
List& Value::list() { return get<List>(Kind::kList); }
const Dict& Value::dict() const { return get<Dict>(Kind::kDict); }
Dict& Value::dict() { return get<Dict>(Kind::kDict); }
const std::shared_ptr<Stateful>& Value::stateful() const {
  return get<std::shared_ptr<Stateful>>(Kind::kStateful);
}

namespace {
bool tensors_equal(const at::Tensor& a, const at::Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  if (a.numel() == 0) return true;
  // Bit-exact: compare the bytes of contiguous copies (NaNs with equal bits are equal).
  at::Tensor ca = a.cpu().contiguous(), cb = b.cpu().contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}
}  // namespace

bool Value::equals(const Value& other) const {
  if (kind() != other.kind()) return false;
  switch (kind()) {
    case Kind::kNone:
      return true;
    case Kind::kBool:
      return to_bool() == other.to_bool();
    case Kind::kInt:
      return to_int() == other.to_int();
    case Kind::kDouble: {
      double a = std::get<double>(v_), b = std::get<double>(other.v_);
      return std::memcmp(&a, &b, sizeof a) == 0;
    }
    case Kind::kString:
      return to_string() == other.to_string();
    case Kind::kBytes:
      return to_bytes() == other.to_bytes();
    case Kind::kTensor:
      return tensors_equal(tensor(), other.tensor());
    case Kind::kSharded: {
      const auto &a = sharded(), &b = other.sharded();
      if (a.global_size != b.global_size || a.local_shards.size() != b.local_shards.size())
        return false;
      for (size_t i = 0; i < a.local_shards.size(); ++i)
        if (a.local_shards[i].offsets != b.local_shards[i].offsets ||
            !tensors_equal(a.local_shards[i].tensor, b.local_shards[i].tensor))
          return false;
      return true;
    }
    case Kind::kList: {
      const auto &a = list(), &b = other.list();
      if (a.size() != b.size()) return false;
      for (size_t i = 0; i < a.size(); ++i)
        if (!a[i].equals(b[i])) return false;
      return true;
    }
    case Kind::kDict: {
      const auto &a = dict(), &b = other.dict();
      if (a.size() != b.size()) return false;
      for (auto ia = a.begin(), ib = b.begin(); ia != a.end(); ++ia, ++ib)
        if (ia->first != ib->first || !ia->second.equals(ib->second)) return false;
      return true;
    }
    case Kind::kStateful:
      return stateful() == other.stateful();
  }
  return false;
}

namespace {
std::string shape_string(at::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}
}  // namespace

std::string describe(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kTensor:
      if (!v.tensor().defined()) return "undefined tensor";
      return std::string("tensor ") + dtype_name(v.tensor().scalar_type()) +
             shape_string(v.tensor().sizes());
    case Value::Kind::kSharded: {
      const auto& s = v.sharded();
      return "sharded tensor " + shape_string(s.global_size) + " with " +
             std::to_string(s.local_shards.size()) + " local shards";
    }
    case Value::Kind::kInt:
      return "int " + std::to_string(v.to_int());
    case Value::Kind::kString:
      return "string \"" + v.to_string() + "\"";
    case Value::Kind::kList:
      return "list of " + std::to_string(v.list().size());
    case Value::Kind::kDict:
      return "dict of " + std::to_string(v.dict().size());
    default:
      return v.kind_name();
  }
}

}  // namespace dcp
