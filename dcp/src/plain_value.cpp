// The encoding of plain values (none, bool, int, double, string, bytes,
// lists and dicts of them) in BYTE_IO items (docs/FORMAT.md).
#include "dcp/default_planner.h"

#include <ATen/ATen.h>

#include <cstring>

#include "codec.h"
#include "dcp/error.h"

namespace dcp {

using namespace internal;

// ---------------------------------------------------------------------------
// Plain values

namespace {
enum PlainTag : uint8_t { kNone = 0, kFalse, kTrue, kInt, kDouble, kString, kBytes, kList, kDict };
constexpr uint8_t kPlainMarker = 0xD1;  // first byte of every encoded plain value

void encode_plain(codec::Encoder& e, const Value& v, const std::string& what) {
  switch (v.kind()) {
    case Value::Kind::kNone:
      e.u8(kNone);
      break;
    case Value::Kind::kBool:
      e.u8(v.to_bool() ? kTrue : kFalse);
      break;
    case Value::Kind::kInt:
      e.u8(kInt);
      e.svarint(v.to_int());
      break;
    case Value::Kind::kDouble:
      e.u8(kDouble);
      e.f64(v.to_double());
      break;
    case Value::Kind::kString:
      e.u8(kString);
      e.str(v.to_string());
      break;
    case Value::Kind::kBytes:
      e.u8(kBytes);
      e.str(v.to_bytes().data);
      break;
    case Value::Kind::kList:
      e.u8(kList);
      e.varint(v.list().size());
      for (const auto& x : v.list()) encode_plain(e, x, what);
      break;
    case Value::Kind::kDict:
      e.u8(kDict);
      e.varint(v.dict().size());
      for (const auto& kv : v.dict()) {
        e.str(kv.first);
        encode_plain(e, kv.second, what);
      }
      break;
    default:
      throw InvalidArgumentError(what + ": a " + v.kind_name() +
                                 " cannot be stored as a plain value");
  }
}

Value decode_plain(codec::Decoder& d, int depth) {
  if (depth > 256) d.fail("plain value nested too deeply");
  switch (d.u8()) {
    case kNone:
      return Value();
    case kFalse:
      return Value(false);
    case kTrue:
      return Value(true);
    case kInt:
      return Value(d.svarint());
    case kDouble:
      return Value(d.f64());
    case kString:
      return Value(d.str());
    case kBytes:
      return Value(Bytes{d.str()});
    case kList: {
      List list(d.count("list"));
      for (auto& x : list) x = decode_plain(d, depth + 1);
      return Value(std::move(list));
    }
    case kDict: {
      Dict dict;
      const size_t n = d.count("dict");
      for (size_t i = 0; i < n; ++i) {
        std::string k = d.str();
        dict[std::move(k)] = decode_plain(d, depth + 1);
      }
      return Value(std::move(dict));
    }
    default:
      d.fail("unknown plain value tag");
  }
}
}  // namespace

Bytes encode_plain_value(const Value& value) {
  codec::Encoder e;
  e.u8(kPlainMarker);
  encode_plain(e, value, "plain value");
  return Bytes{e.take()};
}

Value decode_plain_value(std::string_view bytes, const std::string& what) {
  codec::Decoder d(bytes, what);
  if (d.u8() != kPlainMarker) d.fail("not an encoded plain value");
  Value v = decode_plain(d, 0);
  if (!d.done()) d.fail("trailing bytes after plain value");
  return v;
}

}  // namespace dcp
