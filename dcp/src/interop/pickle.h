// A restricted unpickler for the pickle streams PyTorch writes: DCP's
// .metadata (protocols 2-5), torch.save's data.pkl (protocol 2) and DCP's
// BYTE_IO items. It never executes anything: a GLOBAL (or STACK_GLOBAL) is
// looked up in an allowlist given by the caller and becomes a kGlobal
// object; REDUCE, NEWOBJ and BUILD become kCall objects recording the
// callable, its arguments and the state, for the caller to interpret.
// Any other global, any opcode outside the supported set, and any stream
// that breaks a limit is a CorruptionError naming the opcode (or global),
// its byte offset and `source`.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dcp/error.h"

namespace dcp {
namespace internal {
namespace py {

enum class Kind : uint8_t {
  kNone,
  kBool,
  kInt,     // fits in int64
  kBigInt,  // a LONG1/LONG4 beyond 64 bits: `str` holds the little-endian two's complement bytes
  kFloat,
  kStr,         // UTF-8 text (`str`)
  kBytes,       // `str` holds the bytes
  kTuple,       // `items`
  kList,        // `items`
  kDict,        // `entries`, in insertion order (keys are not deduplicated)
  kSet,         // `items` (set and frozenset)
  kGlobal,      // `str` = "module.name" (e.g. "torch.Size", "collections.OrderedDict")
  kCall,        // REDUCE / NEWOBJ / NEWOBJ_EX: `callable` (a kGlobal, or any object) applied
                // to `args` (a kTuple; `kwargs` for NEWOBJ_EX, else null); then `state` when
                // BUILD ran on it (else null); `items` / `entries` when APPEND(S) / SETITEM(S)
                // ran on it (an OrderedDict built by REDUCE, then filled).
  kPersistent,  // BINPERSID: `args` is the persistent id (a tuple for torch.save storages)
};

struct Object {
  Kind kind = Kind::kNone;
  bool boolean = false;
  int64_t integer = 0;
  double number = 0;
  std::string str;
  std::vector<const Object*> items;
  std::vector<std::pair<const Object*, const Object*>> entries;
  const Object* callable = nullptr;
  const Object* args = nullptr;
  const Object* kwargs = nullptr;
  const Object* state = nullptr;
  uint64_t offset = 0;  // byte offset in the stream of the opcode that made it (for errors)

  bool is(Kind k) const { return kind == k; }
  // For kGlobal: true when it names `qualified` ("module.name").
  bool is_global(std::string_view qualified) const {
    return kind == Kind::kGlobal && str == qualified;
  }
  // For kCall: true when its callable is the global `qualified`.
  bool is_call_of(std::string_view qualified) const {
    return kind == Kind::kCall && callable && callable->is_global(qualified);
  }
};

// A short rendering for errors: "int 7", "str 'abc'", "call of torch.Size", "dict (3 entries)".
std::string describe(const Object& o);

// True when `s` is text CPython's UTF-8 decoder takes as a pickle's str (with
// "surrogatepass": no overlong forms, nothing above U+10FFFF).
bool valid_utf8(std::string_view s);

// The error for a GLOBAL outside the allowlist: the stream is well formed
// but names an object dcp++ does not read (callers may treat the value as
// unreadable rather than the file as damaged).
class DisallowedGlobalError : public CorruptionError {
 public:
  explicit DisallowedGlobalError(const std::string& m) : CorruptionError(m) {}
};

struct Limits {
  // max_depth: a container is one deeper than its deepest child when the
  // child goes in. Cycles, and objects filled through the memo after they
  // were placed, can still make the graph deeper (or infinite): walks over a
  // result need their own bound (a visited set or a depth count).
  size_t max_depth = 1000;               // nesting of MARKs and containers being built
  size_t max_memo = size_t{1} << 24;     // memo entries
  size_t max_objects = size_t{1} << 26;  // objects made in all
  // A single string/bytes length, and every length, is also checked against
  // the bytes left in the stream.
  uint64_t max_length = uint64_t{1} << 32;
};

// The result of unpickling: the objects (owned here; cycles are fine) and
// the root.
class Pickle {
 public:
  const Object& root() const { return *root_; }
  // Highest protocol seen in PROTO (0 when absent).
  int protocol() const { return protocol_; }

 private:
  friend class Unpickler;
  std::vector<std::unique_ptr<Object>> arena_;
  const Object* root_ = nullptr;
  int protocol_ = 0;
};

// Unpickles `data` (the whole stream up to and including STOP; trailing
// bytes are an error). `allowed_globals` are the "module.name" the stream
// may name; any other is a DisallowedGlobalError ("disallowed global 'os.system' at byte
// 12 of <source>"). `source` names the stream in errors ("file
// '/ck/.metadata'", "data.pkl of item 'w' in '/ck/__0_0.distcp'").
Pickle unpickle(std::string_view data, const std::set<std::string>& allowed_globals,
                const std::string& source, const Limits& limits = {});

}  // namespace py
}  // namespace internal
}  // namespace dcp
