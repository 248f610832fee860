// A minimal protocol-2 pickle writer: the streams PyTorch's readers take.
// DCP's .metadata (plain pickle.load), torch.save's data.pkl and BYTE_IO
// items (torch.load, including 2.x's weights_only unpickler, which refuses
// protocol >= 4 opcodes: STACK_GLOBAL, MEMOIZE, FRAME, SHORT_BINUNICODE).
//
// Only these opcodes are written: PROTO 2, GLOBAL, MARK, EMPTY_TUPLE,
// TUPLE1/2/3, TUPLE, EMPTY_LIST, APPENDS, EMPTY_DICT, SETITEMS, NEWOBJ,
// REDUCE, BUILD, BINPERSID, BININT1/BININT2/BININT/LONG1, BINFLOAT,
// BINUNICODE, NONE, NEWTRUE/NEWFALSE, STOP. No memo: every object is written
// out where it is used (the readers do not need identity).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace dcp {
namespace internal {
namespace py {

class PickleWriter {
 public:
  PickleWriter();  // starts the stream with PROTO 2

  // Scalars.
  void none();
  void boolean(bool v);
  void integer(int64_t v);          // the shortest of BININT1 / BININT2 / BININT / LONG1
  void real(double v);              // BINFLOAT (big-endian)
  void str(std::string_view utf8);  // BINUNICODE
  // Python bytes as protocol 2 spells them: _codecs.encode(<latin-1 text>, "latin1").
  void bytes(std::string_view data);

  // GLOBAL "module\nname\n" ("torch._utils", "_rebuild_tensor_v2").
  void global(std::string_view module, std::string_view name);

  // Containers. A tuple: mark(), the items, tuple(); tuple_of(n) for the
  // 0..3 items just written (EMPTY_TUPLE / TUPLE1..3, no MARK).
  void mark();
  void tuple();
  void tuple_of(int n);
  // A list: empty_list(), then (optionally) mark(), the items, appends().
  void empty_list();
  void appends();
  // A dict: empty_dict(), then (optionally) mark(), key, value, ..., setitems().
  void empty_dict();
  void setitems();

  // Objects: callable and args tuple on the stack -> REDUCE; class and args
  // tuple -> NEWOBJ; object and state -> BUILD; persistent id -> BINPERSID.
  void reduce();
  void newobj();
  void build();
  void binpersid();

  // Appends STOP and returns the stream; the writer is empty afterwards.
  std::string finish();

  size_t size() const { return out_.size(); }

 private:
  void op(char c) { out_.push_back(c); }
  std::string out_;
};

}  // namespace py
}  // namespace internal
}  // namespace dcp
