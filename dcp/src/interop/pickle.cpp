// The restricted unpickler (interop/pickle.h): an iterative pickle VM over a
// byte string that builds a graph of Objects in the Pickle's arena and never
// calls anything.
//
// Where pickle.h and CPython leave room, this one:
// - accepts PROTO 0-5 anywhere (protocol() is the highest seen) and streams
//   without PROTO; the text opcodes of protocols 0/1 are refused, so only
//   protocol-0/1 streams made of the binary opcodes below parse;
// - maps, like CPython's fix_imports, the Python 2 names a protocol < 3
//   writer emits for builtins ("__builtin__.set" -> "builtins.set",
//   "copy_reg.X" -> "copyreg.X", "__builtin__.unicode" -> "builtins.str",
//   ...) before the allowlist is consulted;
// - decodes SHORT_BINSTRING / BINSTRING as UTF-8 (torch.load's default
//   encoding) into kStr, and refuses any string that is not UTF-8 (encoded
//   surrogates pass, as CPython's "surrogatepass" writes them);
// - makes a kInt of any LONG1/LONG4 whose value fits in int64 (whatever its
//   byte count), else a kBigInt holding the minimal two's complement bytes;
// - refuses a second BUILD on the same object;
// - requires exactly one object and no open MARK at STOP (CPython ignores
//   leftovers);
// - checks, like CPython's C unpickler, that no opcode reaches below the
//   innermost MARK (POP of a MARK on top pops the MARK).
//
// Costs. Each opcode makes at most one object (sizeof(Object) is 144 bytes,
// one allocation each) and pushes at most one reference, every length is
// checked against the bytes left before anything is allocated, and memo ids
// far above the number of entries go to a map, not a vector: memory is
// O(stream size), bounded as well by Limits::max_objects. Nothing is hashed
// per object: stack and memo entries carry the object's arena index, which
// indexes the depth table. A 21 MB .metadata of 100,000 tensors (4M objects)
// parses in about 0.5 s.
//
// Depth. Limits::max_depth bounds the open MARKs, and the nesting of each
// container as it is built: one more than its deepest child at the time the
// child goes in. CPython writes children before they go in, so that is the
// depth of what it wrote; but an object filled after it was placed (through
// the memo) and cycles can make the graph deeper than that, so code that
// walks a result must still bound its own walk (a visited set or a depth).
#include "interop/pickle.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <new>
#include <unordered_map>

#include "dcp/error.h"

namespace dcp {
namespace internal {
namespace py {

namespace {

// Opcodes (CPython Lib/pickle.py, pickletools names).
enum Op : uint8_t {
  kMark = '(',
  kStop = '.',
  kPop = '0',
  kPopMark = '1',
  kDup = '2',
  kFloat = 'F',
  kInt = 'I',
  kBinInt = 'J',
  kBinInt1 = 'K',
  kLong = 'L',
  kBinInt2 = 'M',
  kNoneOp = 'N',
  kPersId = 'P',
  kBinPersId = 'Q',
  kReduce = 'R',
  kString = 'S',
  kBinString = 'T',
  kShortBinString = 'U',
  kUnicode = 'V',
  kBinUnicode = 'X',
  kAppend = 'a',
  kBuild = 'b',
  kGlobalOp = 'c',
  kDictOp = 'd',
  kEmptyDict = '}',
  kAppends = 'e',
  kGet = 'g',
  kBinGet = 'h',
  kInst = 'i',
  kLongBinGet = 'j',
  kListOp = 'l',
  kEmptyList = ']',
  kObj = 'o',
  kPut = 'p',
  kBinPut = 'q',
  kLongBinPut = 'r',
  kSetItem = 's',
  kTupleOp = 't',
  kEmptyTuple = ')',
  kSetItems = 'u',
  kBinFloat = 'G',
  kProto = 0x80,
  kNewObj = 0x81,
  kExt1 = 0x82,
  kExt2 = 0x83,
  kExt4 = 0x84,
  kTuple1 = 0x85,
  kTuple2 = 0x86,
  kTuple3 = 0x87,
  kNewTrue = 0x88,
  kNewFalse = 0x89,
  kLong1 = 0x8a,
  kLong4 = 0x8b,
  kBinBytes = 'B',
  kShortBinBytes = 'C',
  kShortBinUnicode = 0x8c,
  kBinUnicode8 = 0x8d,
  kBinBytes8 = 0x8e,
  kEmptySet = 0x8f,
  kAddItems = 0x90,
  kFrozenSet = 0x91,
  kNewObjEx = 0x92,
  kStackGlobal = 0x93,
  kMemoize = 0x94,
  kFrame = 0x95,
  kByteArray8 = 0x96,
  kNextBuffer = 0x97,
  kReadOnlyBuffer = 0x98,
};

// The pickletools name of an opcode, nullptr for a byte that is none.
const char* opcode_name(uint8_t op) {
  switch (op) {
    case kMark:
      return "MARK";
    case kStop:
      return "STOP";
    case kPop:
      return "POP";
    case kPopMark:
      return "POP_MARK";
    case kDup:
      return "DUP";
    case kFloat:
      return "FLOAT";
    case kInt:
      return "INT";
    case kBinInt:
      return "BININT";
    case kBinInt1:
      return "BININT1";
    case kLong:
      return "LONG";
    case kBinInt2:
      return "BININT2";
    case kNoneOp:
      return "NONE";
    case kPersId:
      return "PERSID";
    case kBinPersId:
      return "BINPERSID";
    case kReduce:
      return "REDUCE";
    case kString:
      return "STRING";
    case kBinString:
      return "BINSTRING";
    case kShortBinString:
      return "SHORT_BINSTRING";
    case kUnicode:
      return "UNICODE";
    case kBinUnicode:
      return "BINUNICODE";
    case kAppend:
      return "APPEND";
    case kBuild:
      return "BUILD";
    case kGlobalOp:
      return "GLOBAL";
    case kDictOp:
      return "DICT";
    case kEmptyDict:
      return "EMPTY_DICT";
    case kAppends:
      return "APPENDS";
    case kGet:
      return "GET";
    case kBinGet:
      return "BINGET";
    case kInst:
      return "INST";
    case kLongBinGet:
      return "LONG_BINGET";
    case kListOp:
      return "LIST";
    case kEmptyList:
      return "EMPTY_LIST";
    case kObj:
      return "OBJ";
    case kPut:
      return "PUT";
    case kBinPut:
      return "BINPUT";
    case kLongBinPut:
      return "LONG_BINPUT";
    case kSetItem:
      return "SETITEM";
    case kTupleOp:
      return "TUPLE";
    case kEmptyTuple:
      return "EMPTY_TUPLE";
    case kSetItems:
      return "SETITEMS";
    case kBinFloat:
      return "BINFLOAT";
    case kProto:
      return "PROTO";
    case kNewObj:
      return "NEWOBJ";
    case kExt1:
      return "EXT1";
    case kExt2:
      return "EXT2";
    case kExt4:
      return "EXT4";
    case kTuple1:
      return "TUPLE1";
    case kTuple2:
      return "TUPLE2";
    case kTuple3:
      return "TUPLE3";
    case kNewTrue:
      return "NEWTRUE";
    case kNewFalse:
      return "NEWFALSE";
    case kLong1:
      return "LONG1";
    case kLong4:
      return "LONG4";
    case kBinBytes:
      return "BINBYTES";
    case kShortBinBytes:
      return "SHORT_BINBYTES";
    case kShortBinUnicode:
      return "SHORT_BINUNICODE";
    case kBinUnicode8:
      return "BINUNICODE8";
    case kBinBytes8:
      return "BINBYTES8";
    case kEmptySet:
      return "EMPTY_SET";
    case kAddItems:
      return "ADDITEMS";
    case kFrozenSet:
      return "FROZENSET";
    case kNewObjEx:
      return "NEWOBJ_EX";
    case kStackGlobal:
      return "STACK_GLOBAL";
    case kMemoize:
      return "MEMOIZE";
    case kFrame:
      return "FRAME";
    case kByteArray8:
      return "BYTEARRAY8";
    case kNextBuffer:
      return "NEXT_BUFFER";
    case kReadOnlyBuffer:
      return "READONLY_BUFFER";
    default:
      return nullptr;
  }
}

std::string hex_byte(uint8_t b) {
  static const char* digits = "0123456789abcdef";
  return std::string("0x") + digits[b >> 4] + digits[b & 15];
}

// 'text' for messages: quotes and backslashes escaped, bytes outside
// printable ASCII as \xNN, cut after `max` bytes.
std::string quote(std::string_view s, size_t max = 60) {
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '\'' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c >= 0x7f) {
      out += "\\x" + hex_byte(c).substr(2);
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '\'';
  if (s.size() > max) out += "...";
  return out;
}

bool is_container(Kind k) {
  switch (k) {
    case Kind::kTuple:
    case Kind::kList:
    case Kind::kDict:
    case Kind::kSet:
    case Kind::kCall:
    case Kind::kPersistent:
      return true;
    default:
      return false;
  }
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kBigInt:
      return "big int";
    case Kind::kFloat:
      return "float";
    case Kind::kStr:
      return "str";
    case Kind::kBytes:
      return "bytes";
    case Kind::kTuple:
      return "tuple";
    case Kind::kList:
      return "list";
    case Kind::kDict:
      return "dict";
    case Kind::kSet:
      return "set";
    case Kind::kGlobal:
      return "global";
    case Kind::kCall:
      return "call";
    case Kind::kPersistent:
      return "persistent id";
  }
  return "?";
}

std::string count(size_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

// The Python 3 name of a global a protocol < 3 writer spelled the Python 2
// way (CPython Lib/_compat_pickle.py, the entries for builtins only).
std::string python3_name(const std::string& module, const std::string& name) {
  if (module == "__builtin__") {
    static const std::pair<const char*, const char*> kRenamed[] = {
        {"xrange", "builtins.range"},   {"reduce", "functools.reduce"}, {"intern", "sys.intern"},
        {"unichr", "builtins.chr"},     {"unicode", "builtins.str"},    {"long", "builtins.int"},
        {"basestring", "builtins.str"},
    };
    for (const auto& [from, to] : kRenamed) {
      if (name == from) return to;
    }
    return "builtins." + name;
  }
  if (module == "copy_reg") return "copyreg." + name;
  return module + "." + name;
}

}  // namespace

// UTF-8 as CPython's decoder with "surrogatepass" accepts it: no overlong
// forms, nothing above U+10FFFF; encoded surrogates (ED A0..BF xx) pass.
bool valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    const unsigned c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    size_t n;
    unsigned lo = 0x80, hi = 0xbf;  // bounds of the second byte
    if (c >= 0xc2 && c <= 0xdf) {
      n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 3;
      if (c == 0xe0) lo = 0xa0;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 4;
      if (c == 0xf0) lo = 0x90;
      if (c == 0xf4) hi = 0x8f;
    } else {
      return false;
    }
    if (static_cast<size_t>(end - p) < n) return false;
    if (p[1] < lo || p[1] > hi) return false;
    for (size_t i = 2; i < n; ++i) {
      if ((p[i] & 0xc0) != 0x80) return false;
    }
    p += n;
  }
  return true;
}

std::string describe(const Object& o) {
  switch (o.kind) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return o.boolean ? "bool True" : "bool False";
    case Kind::kInt:
      return "int " + std::to_string(o.integer);
    case Kind::kBigInt:
      return "int of " + count(o.str.size(), "byte", "bytes") + " (beyond 64 bits)";
    case Kind::kFloat: {
      if (std::isnan(o.number)) return "float nan";
      if (std::isinf(o.number)) return o.number > 0 ? "float inf" : "float -inf";
      char buf[32];
      auto r = std::to_chars(buf, buf + sizeof buf, o.number);
      return "float " + std::string(buf, r.ptr);
    }
    case Kind::kStr:
      return "str " + quote(o.str, 40);
    case Kind::kBytes:
      return "bytes (" + count(o.str.size(), "byte", "bytes") + ")";
    case Kind::kTuple:
      return "tuple (" + count(o.items.size(), "item", "items") + ")";
    case Kind::kList:
      return "list (" + count(o.items.size(), "item", "items") + ")";
    case Kind::kDict:
      return "dict (" + count(o.entries.size(), "entry", "entries") + ")";
    case Kind::kSet:
      return "set (" + count(o.items.size(), "item", "items") + ")";
    case Kind::kGlobal:
      return "global " + o.str;
    case Kind::kCall:
      if (!o.callable) return "call";
      if (o.callable->is(Kind::kGlobal)) return "call of " + o.callable->str;
      return std::string("call of a ") + kind_name(o.callable->kind);
    case Kind::kPersistent:
      return o.args ? std::string("persistent id (") + kind_name(o.args->kind) + ")"
                    : "persistent id";
  }
  return "?";
}

class Unpickler {
 public:
  Unpickler(std::string_view data, const std::set<std::string>& allowed, const std::string& source,
            const Limits& limits, Pickle& out)
      : data_(data), allowed_(allowed), source_(source), limits_(limits), out_(out) {}

  void run();
  uint64_t op_pos() const { return op_pos_; }

 private:
  // An object on the stack or in the memo: the object, and its index in the
  // arena (for depth_).
  struct Ref {
    Object* obj = nullptr;
    uint32_t id = 0;
  };

  // "pickle: <what> at byte <op offset> of <source> (<OPNAME>, 0xNN)".
  [[noreturn]] void fail(const std::string& what) const { throw CorruptionError(message(what)); }
  std::string message(const std::string& what) const {
    const char* name = opcode_name(op_);
    return "pickle: " + what + " at byte " + std::to_string(op_pos_) + " of " + source_ + " (" +
           (name ? name : "?") + ", " + hex_byte(op_) + ")";
  }
  [[noreturn]] void fail_plain(const std::string& what, uint64_t pos) const {
    throw CorruptionError("pickle: " + what + " at byte " + std::to_string(pos) + " of " + source_);
  }

  uint64_t left() const { return data_.size() - pos_; }
  const char* take(uint64_t n) {
    if (n > left()) {
      fail("truncated stream: the opcode needs " + std::to_string(n) + " more bytes, " +
           std::to_string(left()) + " left");
    }
    const char* p = data_.data() + pos_;
    pos_ += n;
    return p;
  }
  uint64_t le(size_t n) {
    const auto* p = reinterpret_cast<const unsigned char*>(take(n));
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;) v = (v << 8) | p[i];
    return v;
  }
  // `n` bytes of payload announced by a length field: checked against the
  // limit and the bytes left before anything is allocated.
  std::string_view payload(uint64_t n) {
    if (n > limits_.max_length) {
      fail("length " + std::to_string(n) + " beyond the limit of " +
           std::to_string(limits_.max_length) + " (Limits::max_length)");
    }
    if (n > left()) {
      fail("length " + std::to_string(n) + " beyond the " + std::to_string(left()) +
           " bytes left in the stream");
    }
    std::string_view v(data_.data() + pos_, n);
    pos_ += n;
    return v;
  }

  // A new object, pushed on the stack.
  Object* make(Kind k) {
    const size_t n = out_.arena_.size();
    if (n >= limits_.max_objects || n >= UINT32_MAX) {
      fail("more than " + std::to_string(std::min<size_t>(limits_.max_objects, UINT32_MAX)) +
           " objects (Limits::max_objects)");
    }
    out_.arena_.push_back(std::make_unique<Object>());
    depth_.push_back(is_container(k) ? 1 : 0);
    Object* o = out_.arena_.back().get();
    o->kind = k;
    o->offset = op_pos_;
    stack_.push_back({o, static_cast<uint32_t>(n)});
    return o;
  }
  void make_str(Kind k, std::string_view s) {
    if (k == Kind::kStr && !valid_utf8(s)) fail("string is not UTF-8 text");
    make(k)->str.assign(s.data(), s.size());
  }

  size_t fence() const { return marks_.empty() ? 0 : marks_.back(); }
  Ref pop() {
    if (stack_.size() <= fence()) fail("stack underflow");
    Ref r = stack_.back();
    stack_.pop_back();
    return r;
  }
  Ref top() const {
    if (stack_.size() <= fence()) fail("stack underflow");
    return stack_.back();
  }
  // Pops the innermost MARK; returns where its items start on the stack.
  size_t pop_mark() {
    if (marks_.empty()) fail("no MARK before this opcode");
    const size_t k = marks_.back();
    marks_.pop_back();
    return k;
  }
  // The object below a MARK's items, that they go into.
  Ref below_mark(size_t k) const {
    if (k <= fence()) fail("stack underflow: nothing below the MARK");
    return stack_[k - 1];
  }

  // Nesting depth (depth_): 0 for scalars, 1 for an empty container, else
  // one more than its deepest child at the time the child went in.
  void contains(Ref parent, Ref child) {
    const uint32_t d = depth_[child.id] + 1;
    if (d <= depth_[parent.id] || parent.id == child.id) return;
    if (d > limits_.max_depth) {
      fail("objects nested deeper than the limit of " + std::to_string(limits_.max_depth) +
           " (Limits::max_depth)");
    }
    depth_[parent.id] = d;
  }

  // The memo: ids below 2 * entries + 1024 in a vector (CPython's ids count
  // up from 0), others in a map, so a large id costs no memory.
  Ref* memo_slot(uint64_t id, bool create) {
    if (id < memo_dense_.size()) return &memo_dense_[id];
    if (id < 2 * memo_entries_ + 1024) {
      if (!create) return nullptr;
      memo_dense_.resize(id + 1);
      return &memo_dense_[id];
    }
    auto it = memo_sparse_.find(id);
    if (it != memo_sparse_.end()) return &it->second;
    return create ? &memo_sparse_[id] : nullptr;
  }
  void memo_put(uint64_t id, Ref r) {
    if (memo_entries_ >= limits_.max_memo) {
      Ref* existing = memo_slot(id, false);
      if (!existing || !existing->obj) {
        fail("more than " + std::to_string(limits_.max_memo) + " memo entries (Limits::max_memo)");
      }
    }
    Ref* slot = memo_slot(id, true);
    if (!slot->obj) ++memo_entries_;
    *slot = r;
  }
  void memo_get(uint64_t id) {
    Ref* slot = memo_slot(id, false);
    if (!slot || !slot->obj) fail("memo id " + std::to_string(id) + " is not set");
    stack_.push_back(*slot);
  }

  void global(const std::string& module, const std::string& name) {
    std::string qualified = module + "." + name;
    if (protocol_ < 3) qualified = python3_name(module, name);
    if (!allowed_.count(qualified)) {
      std::string written = module + "." + name;
      throw DisallowedGlobalError(
          message("disallowed global " + quote(qualified, 200) +
                  (written != qualified ? " (written " + quote(written, 200) + ")" : "")));
    }
    make(Kind::kGlobal)->str = std::move(qualified);
  }
  std::string line() {
    const char* begin = data_.data() + pos_;
    const void* nl = std::memchr(begin, '\n', left());
    if (!nl) fail("truncated stream: no end of line in the GLOBAL's name");
    const size_t n = static_cast<const char*>(nl) - begin;
    pos_ += n + 1;
    std::string_view s(begin, n);
    if (!valid_utf8(s)) fail("GLOBAL name is not UTF-8 text");
    return std::string(s);
  }

  // Moves stack_[k..] into the items of `target` (which may sit below k).
  void move_items(Ref target, size_t k) {
    for (size_t i = k; i < stack_.size(); ++i) {
      target.obj->items.push_back(stack_[i].obj);
      contains(target, stack_[i]);
    }
    stack_.resize(k);
  }
  // A new container of stack_[k..] in place of them.
  void collect(Kind kind, size_t k) {
    make(kind);
    const Ref made = stack_.back();
    stack_.pop_back();
    move_items(made, k);
    stack_.push_back(made);
  }
  void int_from_le(std::string_view b);
  void call(Ref callable, Ref args, const Ref* kwargs) {
    if (!args.obj->is(Kind::kTuple)) fail("arguments are " + describe(*args.obj) + ", not a tuple");
    if (kwargs && !kwargs->obj->is(Kind::kDict)) {
      fail("keyword arguments are " + describe(*kwargs->obj) + ", not a dict");
    }
    Object* c = make(Kind::kCall);
    const Ref made = stack_.back();
    c->callable = callable.obj;
    c->args = args.obj;
    contains(made, callable);
    contains(made, args);
    if (kwargs) {
      c->kwargs = kwargs->obj;
      contains(made, *kwargs);
    }
  }
  void append_items(Ref target, size_t k) {
    if (!target.obj->is(Kind::kList) && !target.obj->is(Kind::kCall)) {
      fail("cannot append to " + describe(*target.obj));
    }
    move_items(target, k);
  }
  void set_items(Ref target, size_t k) {
    if (!target.obj->is(Kind::kDict) && !target.obj->is(Kind::kCall)) {
      fail("cannot set items of " + describe(*target.obj));
    }
    if ((stack_.size() - k) % 2 != 0) {
      fail("odd number of objects (" + std::to_string(stack_.size() - k) + ") for keys and values");
    }
    for (size_t i = k; i < stack_.size(); i += 2) {
      target.obj->entries.emplace_back(stack_[i].obj, stack_[i + 1].obj);
      contains(target, stack_[i]);
      contains(target, stack_[i + 1]);
    }
    stack_.resize(k);
  }

  std::string_view data_;
  const std::set<std::string>& allowed_;
  const std::string& source_;
  const Limits& limits_;
  Pickle& out_;

  uint64_t pos_ = 0;
  uint64_t op_pos_ = 0;
  uint8_t op_ = 0;
  int protocol_ = 0;
  std::vector<Ref> stack_;
  std::vector<size_t> marks_;    // stack sizes at each open MARK
  std::vector<uint32_t> depth_;  // by arena index
  std::vector<Ref> memo_dense_;  // by memo id; obj null: not set
  std::unordered_map<uint64_t, Ref> memo_sparse_;
  size_t memo_entries_ = 0;
};

void Unpickler::int_from_le(std::string_view b) {
  const auto* p = reinterpret_cast<const unsigned char*>(b.data());
  size_t n = b.size();
  // Drop the bytes that only repeat the sign.
  while (n > 1 &&
         ((p[n - 1] == 0x00 && p[n - 2] < 0x80) || (p[n - 1] == 0xff && p[n - 2] >= 0x80))) {
    --n;
  }
  if (n <= 8) {
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;) v = (v << 8) | p[i];
    if (n > 0 && n < 8 && (p[n - 1] & 0x80)) v |= ~uint64_t{0} << (8 * n);  // sign-extend
    make(Kind::kInt)->integer = static_cast<int64_t>(v);
    return;
  }
  make(Kind::kBigInt)->str.assign(b.data(), n);
}

void Unpickler::run() {
  for (;;) {
    if (pos_ >= data_.size()) fail_plain("stream ends without STOP", data_.size());
    op_pos_ = pos_;
    op_ = static_cast<uint8_t>(data_[pos_++]);
    switch (op_) {
      case kProto: {
        const auto v = static_cast<int>(le(1));
        if (v > 5) fail("unsupported protocol " + std::to_string(v));
        protocol_ = std::max(protocol_, v);
        break;
      }
      case kFrame: {
        const uint64_t n = le(8);
        if (n > left()) {
          fail("frame of " + std::to_string(n) + " bytes beyond the " + std::to_string(left()) +
               " bytes left in the stream");
        }
        break;
      }
      case kStop: {
        if (!marks_.empty()) fail("STOP with " + count(marks_.size(), "MARK", "MARKs") + " open");
        if (stack_.size() != 1) {
          fail("STOP with " + count(stack_.size(), "object", "objects") +
               " on the stack instead of 1");
        }
        if (pos_ != data_.size()) {
          fail_plain(count(data_.size() - pos_, "byte", "bytes") + " after STOP", pos_);
        }
        out_.root_ = stack_.back().obj;
        out_.protocol_ = protocol_;
        return;
      }

      // Globals.
      case kGlobalOp: {
        std::string module = line();
        std::string name = line();
        global(module, name);
        break;
      }
      case kStackGlobal: {
        const Object* name = pop().obj;
        const Object* module = pop().obj;
        if (!module->is(Kind::kStr) || !name->is(Kind::kStr)) {
          fail("STACK_GLOBAL needs two str on the stack, not " + describe(*module) + " and " +
               describe(*name));
        }
        global(module->str, name->str);
        break;
      }

      // Strings and bytes.
      case kShortBinUnicode:
      case kShortBinString:
        make_str(Kind::kStr, payload(le(1)));
        break;
      case kBinUnicode:
        make_str(Kind::kStr, payload(le(4)));
        break;
      case kBinString: {
        const auto n = static_cast<int32_t>(le(4));
        if (n < 0) fail("negative length " + std::to_string(n));
        make_str(Kind::kStr, payload(static_cast<uint64_t>(n)));
        break;
      }
      case kBinUnicode8:
        make_str(Kind::kStr, payload(le(8)));
        break;
      case kShortBinBytes:
        make_str(Kind::kBytes, payload(le(1)));
        break;
      case kBinBytes:
        make_str(Kind::kBytes, payload(le(4)));
        break;
      case kBinBytes8:
      case kByteArray8:
        make_str(Kind::kBytes, payload(le(8)));
        break;

      // Memo.
      case kMemoize:
        memo_put(memo_entries_, top());
        break;
      case kBinPut:
        memo_put(le(1), top());
        break;
      case kLongBinPut:
        memo_put(le(4), top());
        break;
      case kBinGet:
        memo_get(le(1));
        break;
      case kLongBinGet:
        memo_get(le(4));
        break;

      // Numbers and constants.
      case kBinInt1:
      case kBinInt2: {
        const auto v = static_cast<int64_t>(le(op_ == kBinInt1 ? 1 : 2));
        make(Kind::kInt)->integer = v;
        break;
      }
      case kBinInt: {
        const auto v = static_cast<int32_t>(static_cast<uint32_t>(le(4)));
        make(Kind::kInt)->integer = v;
        break;
      }
      case kLong1:
        int_from_le(payload(le(1)));
        break;
      case kLong4: {
        const auto n = static_cast<int32_t>(le(4));
        if (n < 0) fail("negative length " + std::to_string(n));
        int_from_le(payload(static_cast<uint64_t>(n)));
        break;
      }
      case kBinFloat: {
        const auto* p = reinterpret_cast<const unsigned char*>(take(8));
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | p[i];  // big-endian
        std::memcpy(&make(Kind::kFloat)->number, &bits, sizeof bits);
        break;
      }
      case kNoneOp:
        make(Kind::kNone);
        break;
      case kNewTrue:
      case kNewFalse:
        make(Kind::kBool)->boolean = op_ == kNewTrue;
        break;

      // Stack and marks.
      case kMark:
        if (marks_.size() >= limits_.max_depth) {
          fail("more than " + std::to_string(limits_.max_depth) +
               " nested MARKs (Limits::max_depth)");
        }
        marks_.push_back(stack_.size());
        break;
      case kPop:
        // As CPython's C unpickler: a MARK right on top is what POP pops.
        if (!marks_.empty() && marks_.back() == stack_.size()) {
          marks_.pop_back();
        } else {
          pop();
        }
        break;
      case kPopMark:
        stack_.resize(pop_mark());
        break;
      case kDup:
        stack_.push_back(top());
        break;

      // Tuples.
      case kEmptyTuple:
        make(Kind::kTuple);
        break;
      case kTuple1:
      case kTuple2:
      case kTuple3: {
        const size_t n = op_ - kTuple1 + 1;
        if (stack_.size() - fence() < n) fail("stack underflow");
        collect(Kind::kTuple, stack_.size() - n);
        break;
      }
      case kTupleOp:
        collect(Kind::kTuple, pop_mark());
        break;

      // Lists, dicts, sets.
      case kEmptyList:
        make(Kind::kList);
        break;
      case kListOp:
        collect(Kind::kList, pop_mark());
        break;
      case kAppend: {
        const Ref v = pop();
        const Ref target = top();
        stack_.push_back(v);
        append_items(target, stack_.size() - 1);
        break;
      }
      case kAppends: {
        const size_t k = pop_mark();
        append_items(below_mark(k), k);
        break;
      }
      case kEmptyDict:
        make(Kind::kDict);
        break;
      case kDictOp: {
        const size_t k = pop_mark();
        make(Kind::kDict);
        const Ref d = stack_.back();
        stack_.pop_back();
        set_items(d, k);
        stack_.push_back(d);
        break;
      }
      case kSetItem: {
        const Ref v = pop();
        const Ref key = pop();
        const Ref target = top();
        stack_.push_back(key);
        stack_.push_back(v);
        set_items(target, stack_.size() - 2);
        break;
      }
      case kSetItems: {
        const size_t k = pop_mark();
        set_items(below_mark(k), k);
        break;
      }
      case kEmptySet:
        make(Kind::kSet);
        break;
      case kAddItems: {
        const size_t k = pop_mark();
        const Ref target = below_mark(k);
        if (!target.obj->is(Kind::kSet)) fail("cannot add items to " + describe(*target.obj));
        move_items(target, k);
        break;
      }
      case kFrozenSet:
        collect(Kind::kSet, pop_mark());
        break;

      // Objects.
      case kReduce:
      case kNewObj: {
        const Ref args = pop();
        const Ref callable = pop();
        call(callable, args, nullptr);
        break;
      }
      case kNewObjEx: {
        const Ref kwargs = pop();
        const Ref args = pop();
        const Ref cls = pop();
        call(cls, args, &kwargs);
        break;
      }
      case kBuild: {
        const Ref state = pop();
        const Ref inst = top();
        if (!inst.obj->is(Kind::kCall)) fail("cannot set the state of " + describe(*inst.obj));
        if (inst.obj->state) {
          fail("second BUILD on the " + describe(*inst.obj) + " made at byte " +
               std::to_string(inst.obj->offset));
        }
        inst.obj->state = state.obj;
        contains(inst, state);
        break;
      }
      case kBinPersId: {
        const Ref id = pop();
        make(Kind::kPersistent)->args = id.obj;
        contains(stack_.back(), id);
        break;
      }

      default: {
        const char* name = opcode_name(op_);
        if (name) {
          fail_plain(std::string("unsupported opcode ") + name + " (" + hex_byte(op_) + ")",
                     op_pos_);
        }
        fail_plain("unknown opcode " + hex_byte(op_), op_pos_);
      }
    }
  }
}

Pickle unpickle(std::string_view data, const std::set<std::string>& allowed_globals,
                const std::string& source, const Limits& limits) {
  Pickle out;
  Unpickler u(data, allowed_globals, source, limits, out);
  try {
    u.run();
  } catch (const Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::kInternal,
                "pickle: out of memory at byte " + std::to_string(u.op_pos()) + " of " + source);
  } catch (const std::exception& e) {
    throw Error(ErrorCode::kInternal, std::string("pickle: ") + e.what() + " at byte " +
                                          std::to_string(u.op_pos()) + " of " + source);
  }
  return out;
}

}  // namespace py
}  // namespace internal
}  // namespace dcp
