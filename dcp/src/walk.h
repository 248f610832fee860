// The walk over a nested state dict that flattening (save) and the load
// planner share: every leaf with its flat key and its path.
#pragma once

#include <string>

#include "dcp/default_planner.h"
#include "dcp/error.h"
#include "dcp/value.h"

namespace dcp {
namespace internal {

// Throws the InvalidArgumentError for a flat key that two paths give.
[[noreturn]] void throw_collision(const std::string& key, const ObjectPath& a, const ObjectPath& b);

// A value with leaves below it (a dict or a list) or a Stateful object to
// resolve first: not a leaf to take as it is.
inline bool is_nested(const Value& v) { return v.is_dict() || v.is_list() || v.is_stateful(); }

inline bool contains_tensor(const Value& v) {
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

inline std::string path_string(const ObjectPath& path) {
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

}  // namespace internal
}  // namespace dcp
