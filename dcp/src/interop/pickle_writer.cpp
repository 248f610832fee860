// The protocol-2 pickle writer (interop/pickle_writer.h). The opcodes are
// spelled as CPython's pickle.py names them; each writes what CPython's
// pickler writes at protocol 2 for the same object, less the memo (BINPUT).
#include "interop/pickle_writer.h"

#include <cstring>

#include "dcp/error.h"

namespace dcp {
namespace internal {
namespace py {

namespace {

constexpr char kProto = '\x80';
constexpr char kGlobal = 'c';
constexpr char kMark = '(';
constexpr char kEmptyTuple = ')';
constexpr char kTuple1 = '\x85';
constexpr char kTuple2 = '\x86';
constexpr char kTuple3 = '\x87';
constexpr char kTuple = 't';
constexpr char kEmptyList = ']';
constexpr char kAppends = 'e';
constexpr char kEmptyDict = '}';
constexpr char kSetitems = 'u';
constexpr char kNewobj = '\x81';
constexpr char kReduce = 'R';
constexpr char kBuild = 'b';
constexpr char kBinpersid = 'Q';
constexpr char kBinint1 = 'K';
constexpr char kBinint2 = 'M';
constexpr char kBinint = 'J';
constexpr char kLong1 = '\x8a';
constexpr char kBinfloat = 'G';
constexpr char kBinunicode = 'X';
constexpr char kNone = 'N';
constexpr char kNewtrue = '\x88';
constexpr char kNewfalse = '\x89';
constexpr char kStop = '.';

void put_le(std::string& out, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}

}  // namespace

PickleWriter::PickleWriter() {
  op(kProto);
  out_.push_back('\x02');
}

void PickleWriter::none() { op(kNone); }

void PickleWriter::boolean(bool v) { op(v ? kNewtrue : kNewfalse); }

void PickleWriter::integer(int64_t v) {
  if (v >= 0 && v <= 0xff) {
    op(kBinint1);
    put_le(out_, static_cast<uint64_t>(v), 1);
  } else if (v >= 0 && v <= 0xffff) {
    op(kBinint2);
    put_le(out_, static_cast<uint64_t>(v), 2);
  } else if (v >= INT32_MIN && v <= INT32_MAX) {
    op(kBinint);
    put_le(out_, static_cast<uint64_t>(v), 4);
  } else {
    // LONG1: a length byte, then the minimal little-endian two's complement
    // (CPython's encode_long): drop top bytes that only repeat the sign.
    unsigned char b[8];
    for (int i = 0; i < 8; ++i)
      b[i] = static_cast<unsigned char>(static_cast<uint64_t>(v) >> (8 * i));
    int n = 8;
    while (n > 1 &&
           ((b[n - 1] == 0x00 && !(b[n - 2] & 0x80)) || (b[n - 1] == 0xff && (b[n - 2] & 0x80))))
      --n;
    op(kLong1);
    out_.push_back(static_cast<char>(n));
    out_.append(reinterpret_cast<const char*>(b), static_cast<size_t>(n));
  }
}

void PickleWriter::real(double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  op(kBinfloat);
  for (int i = 7; i >= 0; --i) out_.push_back(static_cast<char>(bits >> (8 * i)));
}

void PickleWriter::str(std::string_view utf8) {
  if (utf8.size() > UINT32_MAX)
    throw InvalidArgumentError("a string of " + std::to_string(utf8.size()) +
                               " bytes is too long for a protocol-2 pickle (BINUNICODE: 4 GiB)");
  op(kBinunicode);
  put_le(out_, utf8.size(), 4);
  out_.append(utf8.data(), utf8.size());
}

void PickleWriter::bytes(std::string_view data) {
  // CPython at protocol 2: save_reduce(codecs.encode, (str(obj, 'latin1'), 'latin1')), the
  // text as UTF-8 of the latin-1 characters (0x80..0xff take two bytes). CPython writes
  // b'' as __builtin__.bytes(); _codecs.encode('', 'latin1') is b'' as well, and keeps to
  // the one global that 2.x's weights_only unpickler allows for bytes.
  global("_codecs", "encode");
  std::string text;
  text.reserve(data.size());
  for (unsigned char c : data) {
    if (c < 0x80) {
      text.push_back(static_cast<char>(c));
    } else {
      text.push_back(static_cast<char>(0xc0 | (c >> 6)));
      text.push_back(static_cast<char>(0x80 | (c & 0x3f)));
    }
  }
  str(text);
  str("latin1");
  tuple_of(2);
  reduce();
}

void PickleWriter::global(std::string_view module, std::string_view name) {
  op(kGlobal);
  out_.append(module.data(), module.size());
  out_.push_back('\n');
  out_.append(name.data(), name.size());
  out_.push_back('\n');
}

void PickleWriter::mark() { op(kMark); }

void PickleWriter::tuple() { op(kTuple); }

void PickleWriter::tuple_of(int n) {
  switch (n) {
    case 0:
      op(kEmptyTuple);
      break;
    case 1:
      op(kTuple1);
      break;
    case 2:
      op(kTuple2);
      break;
    case 3:
      op(kTuple3);
      break;
    default:
      throw InvalidArgumentError("PickleWriter::tuple_of(" + std::to_string(n) +
                                 "): only 0 to 3 items (use mark() and tuple())");
  }
}

void PickleWriter::empty_list() { op(kEmptyList); }

void PickleWriter::appends() { op(kAppends); }

void PickleWriter::empty_dict() { op(kEmptyDict); }

void PickleWriter::setitems() { op(kSetitems); }

void PickleWriter::reduce() { op(kReduce); }

void PickleWriter::newobj() { op(kNewobj); }

void PickleWriter::build() { op(kBuild); }

void PickleWriter::binpersid() { op(kBinpersid); }

std::string PickleWriter::finish() {
  op(kStop);
  std::string s = std::move(out_);
  out_.clear();
  return s;
}

}  // namespace py
}  // namespace internal
}  // namespace dcp
