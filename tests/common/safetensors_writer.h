// A safetensors writer that follows the format's spec (huggingface/
// safetensors README and tensor.rs): u64 header length, a JSON header
// padded with spaces to a multiple of 8, entries ordered by descending dtype
// alignment then name, the buffer. Debian has no Python safetensors: the
// tests and the interop benchmark write their files with this.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace dcp {
namespace testing {

// The format's Dtype enum, in increasing alignment (tensor.rs).
inline const std::vector<std::string> kDtypeOrder = {
    "BOOL",    "F4",          "F6_E2M3",     "F6_E3M2", "U8",  "I8",  "F8_E5M2", "F8_E4M3",
    "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16",     "U16", "F16", "BF16",    "I32",
    "U32",     "F32",         "C64",         "F64",     "I64", "U64"};

inline std::string dtype_str(at::ScalarType t) {
  switch (t) {
    case at::kDouble:
      return "F64";
    case at::kFloat:
      return "F32";
    case at::kHalf:
      return "F16";
    case at::kBFloat16:
      return "BF16";
    case at::kLong:
      return "I64";
    case at::kInt:
      return "I32";
    case at::kShort:
      return "I16";
    case at::kChar:
      return "I8";
    case at::kByte:
      return "U8";
    case at::kBool:
      return "BOOL";
    case at::kComplexFloat:
      return "C64";
    default:
      throw std::runtime_error("no safetensors dtype");
  }
}

struct T {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string data;
};

inline std::string bytes_of(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.nbytes());
}

inline T tensor(const std::string& name, const at::Tensor& t) {
  return T{name, dtype_str(t.scalar_type()), t.sizes().vec(), bytes_of(t)};
}

inline std::string escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o.push_back('\\');
    o.push_back(c);
  }
  return o;
}

inline std::string shape_json(const std::vector<int64_t>& s) {
  std::string o = "[";
  for (size_t i = 0; i < s.size(); ++i) o += (i ? "," : "") + std::to_string(s[i]);
  return o + "]";
}

inline std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s;
}

// The length, the header as given, the buffer.
inline std::string raw_file(const std::string& header, const std::string& buffer) {
  return le64(header.size()) + header + buffer;
}

using Meta = std::optional<std::map<std::string, std::string>>;

// A file as the reference writer makes it (`pad` false: as DCP's
// consolidation writes headers, unpadded).
inline std::string safetensors(std::vector<T> ts, const Meta& meta = Meta{{{"format", "pt"}}},
                               bool pad = true) {
  auto rank = [](const std::string& d) {
    return std::find(kDtypeOrder.begin(), kDtypeOrder.end(), d) - kDtypeOrder.begin();
  };
  std::stable_sort(ts.begin(), ts.end(), [&](const T& a, const T& b) {
    return rank(a.dtype) != rank(b.dtype) ? rank(a.dtype) > rank(b.dtype) : a.name < b.name;
  });
  std::string h = "{", buffer;
  if (meta) {
    h += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : *meta) {
      h += (first ? "" : ",") + std::string("\"") + escape(k) + "\":\"" + escape(v) + "\"";
      first = false;
    }
    h += "}";
  }
  for (const T& t : ts) {
    if (h.size() > 1) h += ",";
    const size_t begin = buffer.size();
    buffer += t.data;
    h += "\"" + escape(t.name) + "\":{\"dtype\":\"" + t.dtype +
         "\",\"shape\":" + shape_json(t.shape) + ",\"data_offsets\":[" + std::to_string(begin) +
         "," + std::to_string(buffer.size()) + "]}";
  }
  h += "}";
  if (pad) h.append((8 - h.size() % 8) % 8, ' ');
  return raw_file(h, buffer);
}

}  // namespace testing
}  // namespace dcp
