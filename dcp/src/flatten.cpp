// Flattening of nested state dicts to dotted keys, and the flattening map's
// encoding (Metadata::planner_data).
#include "dcp/default_planner.h"

#include <ATen/ATen.h>

#include <utility>

#include "codec.h"
#include "dcp/error.h"
#include "walk.h"

namespace dcp {

using namespace internal;

// ---------------------------------------------------------------------------
// Flattening

[[noreturn]] void internal::throw_collision(const std::string& key, const ObjectPath& a,
                                            const ObjectPath& b) {
  auto show = [](const ObjectPath& p) {
    std::string s;
    for (const auto& e : p)
      s += e.is_index ? "[" + std::to_string(e.index) + "]" : "['" + e.key + "']";
    return s;
  };
  throw InvalidArgumentError("flattened key '" + key + "' comes from two places: " + show(a) +
                             " and " + show(b) + "; rename one of them");
}

std::pair<Dict, FlattenMapping> flatten_state_dict(const StateDict& state_dict) {
  Dict flat;
  FlattenMapping mapping;
  // Leaves come in key order of each level, so appending at the end is the
  // common case; a top-level key that is its own path needs no mapping entry.
  walk_dict(state_dict, [&](const std::string& key, const Value& v, const ObjectPath& path) {
    const bool trivial = path.size() == 1;
    const size_t before = flat.size();
    flat.emplace_hint(flat.end(), key, v);
    if (flat.size() == before) {
      auto a = mapping.find(key);
      throw_collision(key, a != mapping.end() ? a->second : ObjectPath{PathElement{false, key, 0}},
                      path);
    }
    if (!trivial) mapping.emplace_hint(mapping.end(), key, path);
  });
  return {std::move(flat), std::move(mapping)};
}

StateDict unflatten_state_dict(const Dict& flat, const FlattenMapping& mapping) {
  StateDict out;
  for (const auto& [key, value] : flat) {
    auto it = mapping.find(key);
    ObjectPath path = it != mapping.end() ? it->second : ObjectPath{PathElement{false, key, 0}};
    if (path.empty() || path[0].is_index)
      throw CorruptionError("flatten mapping of key '" + key + "' does not start with a dict key");
    Value* node = nullptr;
    for (size_t i = 0; i < path.size(); ++i) {
      const PathElement& e = path[i];
      const bool last = i + 1 == path.size();
      Value* child;
      if (i == 0) {
        child = &out[e.key];
      } else if (e.is_index) {
        if (node->is_none()) *node = List{};
        if (!node->is_list())
          throw CorruptionError("flatten mapping of key '" + key + "' is inconsistent");
        auto& list = node->list();
        if (e.index < 0 || e.index > (1 << 30))
          throw CorruptionError("flatten mapping of key '" + key + "' has a bad list index");
        if (list.size() <= static_cast<size_t>(e.index)) list.resize(e.index + 1);
        child = &list[e.index];
      } else {
        if (node->is_none()) *node = Dict{};
        if (!node->is_dict())
          throw CorruptionError("flatten mapping of key '" + key + "' is inconsistent");
        child = &node->dict()[e.key];
      }
      if (last) *child = value;
      node = child;
    }
  }
  return out;
}

std::string encode_flatten_mapping(const FlattenMapping& mapping) {
  codec::Encoder e;
  e.u8(1);  // version of this encoding
  e.varint(mapping.size());
  for (const auto& [key, path] : mapping) {
    e.str(key);
    // The common case, a path of plain keys that joins to the flat key, is one byte.
    const bool trivial = path.size() == 1 && !path[0].is_index && path[0].key == key;
    if (trivial) {
      e.varint(0);
      continue;
    }
    e.varint(path.size());
    for (const auto& p : path) {
      e.u8(p.is_index ? 1 : 0);
      if (p.is_index)
        e.svarint(p.index);
      else
        e.str(p.key);
    }
  }
  return e.take();
}

FlattenMapping decode_flatten_mapping(std::string_view bytes) {
  FlattenMapping mapping;
  if (bytes.empty()) return mapping;
  codec::Decoder d(bytes, "flatten mapping");
  if (d.u8() != 1) d.fail("unknown flatten mapping version");
  const size_t n = d.count("mapping");
  for (size_t i = 0; i < n; ++i) {
    std::string key = d.str();
    const size_t len = d.count("path");
    ObjectPath path;
    if (len == 0) {
      path.push_back(PathElement{false, key, 0});
    } else {
      path.resize(len);
      for (auto& p : path) {
        p.is_index = d.u8() != 0;
        if (p.is_index)
          p.index = d.svarint();
        else
          p.key = d.str();
      }
    }
    mapping.emplace_hint(mapping.end(), std::move(key), std::move(path));
  }
  return mapping;
}

}  // namespace dcp
