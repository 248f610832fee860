// The writer-side primitives (dcp/src/interop/{zip_writer,pickle_writer,
// torch_save_writer}.h): ZipWriter's archives compared byte for byte with
// what LibTorch's own PyTorchStreamWriter writes for the same records
// (whole and streamed in odd pieces, including the ZIP64 cases at 4 GiB) and
// read back by ZipArchive; PickleWriter's streams loaded by CPython (and
// compared with what CPython's pickler writes); torch.load (Python 1.13) of
// plain values and of tensors of every dtype it stores, weights_only where
// 1.13 allows it (tests/dcp/writer_check.py); and the refusals.
#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "dcp/error.h"
#include "dcp/metadata.h"
#include "dcp/value.h"
#include "interop/pickle_writer.h"
#include "interop/torch_save_writer.h"
#include "interop/zip.h"
#include "interop/zip_writer.h"

#ifndef DCP_WRITER_CHECK_PY
#error "DCP_WRITER_CHECK_PY (the path of writer_check.py) must be defined"
#endif

namespace dcp {
namespace internal {
namespace {

namespace fs = std::filesystem;

struct Rec {
  std::string name;
  std::string data;
};

std::string hex_around(const std::string& s, size_t at) {
  std::string out;
  const size_t from = at < 16 ? 0 : at - 16;
  const size_t to = std::min(s.size(), at + 16);
  char buf[8];
  for (size_t i = from; i < to; ++i) {
    std::snprintf(buf, sizeof buf, i == at ? "[%02x]" : "%02x ", static_cast<unsigned char>(s[i]));
    out += buf;
  }
  return out;
}

// "" when equal, else where and how they differ.
std::string first_difference(const std::string& want, const std::string& got) {
  if (want == got) return "";
  size_t i = 0;
  while (i < want.size() && i < got.size() && want[i] == got[i]) ++i;
  return "sizes " + std::to_string(want.size()) + " (PyTorchStreamWriter) and " +
         std::to_string(got.size()) + " (ZipWriter); first difference at byte " +
         std::to_string(i) + ": PyTorchStreamWriter " + hex_around(want, i) + ", ZipWriter " +
         hex_around(got, i);
}

std::string torch_writes(const std::vector<Rec>& recs) {
  std::string out;
  caffe2::serialize::PyTorchStreamWriter w([&out](const void* data, size_t n) {
    out.append(static_cast<const char*>(data), n);
    return n;
  });
  for (const Rec& r : recs) w.writeRecord(r.name, r.data.data(), r.data.size());
  w.writeEndOfFile();
  return out;
}

ZipWriter::Sink to_string(std::string& out) {
  return [&out](const void* data, size_t n) { out.append(static_cast<const char*>(data), n); };
}

std::string zip_adds(const std::vector<Rec>& recs) {
  std::string out;
  ZipWriter w("archive", to_string(out));
  for (const Rec& r : recs) w.add(r.name, r.data);
  const uint64_t total = w.finish();
  EXPECT_EQ(total, out.size());
  EXPECT_EQ(w.offset(), out.size());
  return out;
}

// Streamed: each record's data in pieces of 1, 2, 3, 5, 8, ... bytes (and
// empty appends between them).
std::string zip_streams(const std::vector<Rec>& recs) {
  std::string out;
  ZipWriter w("archive", to_string(out));
  for (const Rec& r : recs) {
    w.begin(r.name, r.data.size());
    size_t at = 0, a = 1, b = 2;
    while (at < r.data.size()) {
      const size_t n = std::min(a, r.data.size() - at);
      w.append(r.data.data() + at, n);
      w.append(r.data.data() + at, 0);
      at += n;
      const size_t c = a + b;
      a = b;
      b = c;
    }
    w.end();
  }
  w.finish();
  return out;
}

std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

std::vector<std::vector<Rec>> record_sets() {
  std::vector<std::vector<Rec>> sets;
  sets.push_back({{"x", "a"}});
  py::PickleWriter pw;
  pickle_tensor(pw, "0", at::kFloat, {2, 3}, false, "t");
  const std::string pkl = pw.finish();
  for (size_t n : {0, 1, 63, 64, 65, 100000})
    sets.push_back({{"data.pkl", pkl}, {"byteorder", "little"}, {"data/0", random_bytes(n, n)}});
  std::vector<Rec> many = {{"data.pkl", pkl}, {"byteorder", "little"}};
  for (int i = 0; i < 12; ++i)
    many.push_back({"data/" + std::to_string(i), random_bytes(i * 37 % 200, 100 + i)});
  sets.push_back(many);
  sets.push_back({{"empty", ""}});
  sets.push_back({{"data.pkl", pkl}, {"empty", ""}, {"after", "xyz"}});
  // Names that make the padding 0 and 63 ("archive/" + 22 characters: 30 + 30 + 4 = 64).
  sets.push_back({{std::string(22, 'n'), "abc"}, {std::string(23, 'm'), "abc"}});
  // A name of 200 bytes, a non-ASCII name.
  sets.push_back({{std::string(200, 'L'), "long"}, {"d\xc3\xa9j\xc3\xa0/\xe2\x82\xac", "utf8"}});
  // Records that are the version already (no second one is added).
  sets.push_back({{"data.pkl", pkl}, {"version", "3\n"}, {"byteorder", "little"}});
  sets.push_back({{"data.pkl", pkl}, {".data/version", "6\n"}});
  return sets;
}

TEST(ZipWriterTest, ByteForByteAsPyTorchStreamWriter) {
  int i = 0;
  for (const auto& recs : record_sets()) {
    SCOPED_TRACE("record set " + std::to_string(i++) + " (" + std::to_string(recs.size()) +
                 " records, first '" + recs.front().name + "')");
    const std::string want = torch_writes(recs);
    EXPECT_EQ(first_difference(want, zip_adds(recs)), "") << "add()";
    EXPECT_EQ(first_difference(want, zip_streams(recs)), "") << "begin/append/end";
  }
}

// The 4 GiB cases, without 4 GiB of memory: the data comes from a read-only
// anonymous mapping (zero pages), and the sinks record a write from inside it
// as a reference instead of copying it.
struct Segment {
  bool ref;
  std::string bytes;         // !ref
  uint64_t from = 0, n = 0;  // ref: [from, from + n) of the mapping
  bool operator==(const Segment& o) const {
    return ref == o.ref && bytes == o.bytes && from == o.from && n == o.n;
  }
};

struct Recorder {
  const char* base;
  uint64_t size;
  std::vector<Segment> segs;
  uint64_t total = 0;
  void write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    total += n;
    if (n == 0) return;
    if (p >= base && p < base + size) {
      const uint64_t from = static_cast<uint64_t>(p - base);
      if (!segs.empty() && segs.back().ref && segs.back().from + segs.back().n == from) {
        segs.back().n += n;
      } else {
        segs.push_back({true, "", from, n});
      }
    } else if (!segs.empty() && !segs.back().ref) {
      segs.back().bytes.append(p, n);
    } else {
      segs.push_back({false, std::string(p, n)});
    }
  }
  // The bytes of the archive at [off, off + n), zeros for references.
  std::string at(uint64_t off, uint64_t n) const {
    std::string out;
    uint64_t pos = 0;
    for (const Segment& s : segs) {
      const uint64_t len = s.ref ? s.n : s.bytes.size();
      const uint64_t b = std::max(pos, off), e = std::min(pos + len, off + n);
      if (b < e) {
        if (s.ref) {
          out.append(e - b, '\0');
        } else {
          out.append(s.bytes, b - pos, e - b);
        }
      }
      pos += len;
    }
    return out;
  }
};

class RecorderFile final : public RandomAccessFile {
 public:
  explicit RecorderFile(const Recorder& r) : r_(r) {}
  size_t read(uint64_t offset, size_t n, void* dst) const override {
    if (offset >= r_.total) return 0;
    const std::string s = r_.at(offset, std::min<uint64_t>(n, r_.total - offset));
    std::memcpy(dst, s.data(), s.size());
    return s.size();
  }
  uint64_t size() const override { return r_.total; }
  const std::string& path() const override { return path_; }

 private:
  const Recorder& r_;
  std::string path_ = "<zip64 archive>";
};

TEST(ZipWriterTest, Zip64ByteForByteAsPyTorchStreamWriter) {
  constexpr uint64_t kBig = uint64_t{1} << 32;
  void* m = ::mmap(nullptr, kBig, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(m, MAP_FAILED) << "mmap of 4 GiB of address space";
  const char* zeros = static_cast<const char*>(m);
  // data/0: exactly 0xffffffff bytes (ZIP64 sizes); data/1 at an offset past
  // 4 GiB (ZIP64 offset); data/2: 4 GiB past 4 GiB (both); data/3: empty past
  // 4 GiB (a ZIP64 offset, no descriptor); then version past 4 GiB.
  struct Big {
    std::string name;
    const char* data;
    uint64_t n;
  };
  const std::vector<Big> recs = {{"data.pkl", "\x80\x02N.", 4},
                                 {"data/0", zeros, kBig - 1},
                                 {"data/1", "abc", 3},
                                 {"data/2", zeros, kBig},
                                 {"data/3", "", 0}};

  Recorder want{zeros, kBig, {}};
  {
    caffe2::serialize::PyTorchStreamWriter w([&want](const void* data, size_t n) {
      want.write(data, n);
      return n;
    });
    for (const Big& r : recs) w.writeRecord(r.name, r.data, r.n);
    w.writeEndOfFile();
  }
  Recorder whole{zeros, kBig, {}}, streamed{zeros, kBig, {}};
  {
    ZipWriter w("archive", [&whole](const void* d, size_t n) { whole.write(d, n); });
    for (const Big& r : recs) w.add(r.name, r.data, r.n);
    EXPECT_EQ(w.finish(), whole.total);
  }
  {
    ZipWriter w("archive", [&streamed](const void* d, size_t n) { streamed.write(d, n); });
    for (const Big& r : recs) {
      w.begin(r.name, r.n);
      uint64_t at = 0;
      for (uint64_t piece = 1000003; at < r.n; piece *= 7) {
        const uint64_t n = std::min(piece, r.n - at);
        w.append(r.data + at, n);
        at += n;
      }
      w.end();
    }
    w.finish();
  }
  EXPECT_GT(want.total, 2 * kBig);
  EXPECT_EQ(whole.total, want.total);
  EXPECT_EQ(streamed.total, want.total);
  EXPECT_TRUE(whole.segs == want.segs);
  EXPECT_TRUE(streamed.segs == want.segs);
  // Where they differ, for the failure message: the headers around each record.
  for (size_t i = 0; i < want.segs.size() && i < whole.segs.size(); ++i)
    if (!(want.segs[i] == whole.segs[i]))
      ADD_FAILURE() << "segment " << i << ": "
                    << first_difference(want.segs[i].bytes, whole.segs[i].bytes);

  // ZipArchive reads the ZIP64 fields back.
  RecorderFile file(whole);
  ZipArchive zip(&file, 0, file.size(), "'<zip64 archive>'");
  const uint32_t crc_zeros_big = crc32(crc32(0, zeros, kBig - 1), zeros, 1);
  const ZipRecord& d0 = zip.get("data/0");
  EXPECT_EQ(d0.size, kBig - 1);
  EXPECT_EQ(d0.crc32, crc32(0, zeros, kBig - 1));
  EXPECT_EQ(zip.data_offset(d0) % 64, 0u);
  const ZipRecord& d1 = zip.get("data/1");
  EXPECT_GT(d1.header_offset, kBig);
  EXPECT_EQ(zip.read(d1, true), "abc");
  EXPECT_EQ(zip.data_offset(d1) % 64, 0u);
  const ZipRecord& d2 = zip.get("data/2");
  EXPECT_EQ(d2.size, kBig);
  EXPECT_EQ(d2.crc32, crc_zeros_big);
  EXPECT_EQ(zip.data_offset(d2) % 64, 0u);
  EXPECT_EQ(zip.read(zip.get("data/3"), true), "");
  EXPECT_EQ(zip.read(zip.get("version"), true), "3\n");
  ::munmap(m, kBig);
}

// ZipArchive (the reader) takes every archive ZipWriter writes: names in
// order, data 64-byte aligned, CRCs checked (and a flipped byte caught).
TEST(ZipWriterTest, ZipArchiveReadsItBack) {
  int i = 0;
  for (const auto& recs : record_sets()) {
    SCOPED_TRACE("record set " + std::to_string(i++));
    const std::string bytes = zip_streams(recs);
    auto file = memory_file(bytes, "/mem.pt");
    ZipArchive zip(file.get(), 0, file->size(), "'/mem.pt'");
    EXPECT_EQ(zip.prefix(), "archive");
    bool has_version = false;
    for (const Rec& r : recs) has_version |= r.name == "version" || r.name == ".data/version";
    ASSERT_EQ(zip.records().size(), recs.size() + (has_version ? 0 : 1));
    for (size_t j = 0; j < recs.size(); ++j) {
      const ZipRecord& rec = zip.records()[j];
      EXPECT_EQ(rec.name, "archive/" + recs[j].name);
      EXPECT_EQ(rec.method, 0);
      EXPECT_EQ(rec.flags, recs[j].data.empty() ? 0x0800 : 0x0808);
      EXPECT_EQ(zip.data_offset(rec) % 64, 0u) << rec.name;
      EXPECT_EQ(zip.read(rec, true), recs[j].data) << rec.name;
    }
    if (!has_version) EXPECT_EQ(zip.read(zip.get("version"), true), "3\n");
  }

  // A ZipWriter archive inside a larger file, at an offset that is not a
  // multiple of 64: its offsets are relative to its own start.
  const std::string inner = zip_adds(record_sets()[5]);
  const std::string outer = std::string(1000, 'x') + inner + "trailing";
  auto file = memory_file(outer, "/ck/__0_0.distcp");
  ZipArchive zip(file.get(), 1000, inner.size(), "'/ck/__0_0.distcp' bytes [1000, ...)");
  EXPECT_EQ(zip.read(zip.get("data/0"), true), record_sets()[5][2].data);
  EXPECT_EQ((zip.data_offset(zip.get("data/0")) - 1000) % 64, 0u);

  // The CRC is the data's: one flipped data byte is caught.
  std::string bad = inner;
  auto good = memory_file(inner, "/m.pt");
  ZipArchive gz(good.get(), 0, inner.size(), "'/m.pt'");
  const uint64_t at = gz.data_offset(gz.get("data/0"));
  bad[at + 7] ^= 0x40;
  auto damaged = memory_file(bad, "/m.pt");
  ZipArchive dz(damaged.get(), 0, bad.size(), "'/m.pt'");
  EXPECT_THROW(dz.read(dz.get("data/0"), true), CorruptionError);
  EXPECT_EQ(dz.read(dz.get("data/0"), false).size(), record_sets()[5][2].data.size());
}

TEST(ZipWriterTest, Refusals) {
  std::string out;
  {
    ZipWriter w("archive", to_string(out));
    w.begin("data/0", 10);
    w.append("12345", 5);
    try {
      w.append("123456", 6);
      ADD_FAILURE() << "appending past the record's size";
    } catch (const InvalidArgumentError& e) {
      EXPECT_NE(std::string(e.what()).find("'archive/data/0'"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("10 bytes"), std::string::npos) << e.what();
    }
    try {
      w.end();
      ADD_FAILURE() << "ending a record short";
    } catch (const InvalidArgumentError& e) {
      EXPECT_NE(std::string(e.what()).find("'archive/data/0' ended after 5 of its 10 bytes"),
                std::string::npos)
          << e.what();
    }
    EXPECT_THROW(w.begin("data/1", 1), InvalidArgumentError);  // data/0 still open
    EXPECT_THROW(w.finish(), InvalidArgumentError);
    w.append("67890", 5);
    w.end();
    EXPECT_THROW(w.end(), InvalidArgumentError);
    EXPECT_THROW(w.append("x", 1), InvalidArgumentError);
    EXPECT_THROW(w.add("data/0", "again"), InvalidArgumentError);  // twice
    EXPECT_THROW(w.add("", "x"), InvalidArgumentError);
    EXPECT_THROW(w.add(std::string(70000, 'n'), "x"), InvalidArgumentError);
    w.finish();
    EXPECT_THROW(w.finish(), InvalidArgumentError);
    EXPECT_THROW(w.add("late", "x"), InvalidArgumentError);
  }
  // What was written is still a whole archive (the refused calls wrote nothing).
  auto file = memory_file(out, "/m.pt");
  ZipArchive zip(file.get(), 0, out.size(), "'/m.pt'");
  ASSERT_EQ(zip.records().size(), 2u);
  EXPECT_EQ(zip.read(zip.get("data/0"), true), "1234567890");
  EXPECT_THROW(ZipWriter("", to_string(out)), InvalidArgumentError);
}

TEST(TorchSaveWriterTest, Refusals) {
  for (at::ScalarType t : {at::kComplexHalf, at::kQInt8, at::kQUInt8, at::kQInt32}) {
    try {
      torch_storage_class(t, "tensor 'model.w'");
      ADD_FAILURE() << c10::toString(t) << " has no 1.13 storage class";
    } catch (const InvalidArgumentError& e) {
      EXPECT_NE(std::string(e.what()).find("tensor 'model.w'"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(c10::toString(t)), std::string::npos) << e.what();
    }
  }
  try {
    py::PickleWriter w;
    pickle_tensor(w, "0", at::kComplexHalf, {2}, false, "tensor 'z'");
    ADD_FAILURE() << "complex32 pickled";
  } catch (const InvalidArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 'z': dtype complex32 (ComplexHalf)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_STREQ(torch_storage_class(at::kBFloat16, "x"), "BFloat16Storage");
  EXPECT_STREQ(torch_storage_class(at::kChar, "x"), "CharStorage");
  EXPECT_STREQ(torch_storage_class(at::kByte, "x"), "ByteStorage");

  auto refuses = [](const Value& v, const std::string& needle) {
    py::PickleWriter w;
    try {
      pickle_plain_value(w, v, "value 'opt.state'");
      ADD_FAILURE() << describe(v) << " pickled as a plain value";
    } catch (const InvalidArgumentError& e) {
      EXPECT_NE(std::string(e.what()).find("value 'opt.state'"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  refuses(Value(at::zeros({2})), "tensor");
  refuses(Value(Dict{{"a", Value(List{1, Value(at::zeros({1}))})}}), "['a'][1]");
  refuses(Value(std::string("\xff\xfe")), "UTF-8");
  refuses(Value(Dict{{"\xc3", 1}}), "key");
  Value deep = 1;
  for (int i = 0; i < 200; ++i) deep = Value(List{deep});
  refuses(deep, "nested");
}

// PickleWriter's opcodes byte for byte (interop.md's minimal pickles).
TEST(PickleWriterTest, MinimalPickles) {
  auto one = [](auto&& push) {
    py::PickleWriter w;
    push(w);
    return w.finish();
  };
  EXPECT_EQ(one([](auto& w) { w.integer(7); }), std::string("\x80\x02K\x07.", 5));
  EXPECT_EQ(one([](auto& w) { w.integer(300); }), std::string("\x80\x02M\x2c\x01.", 6));
  EXPECT_EQ(one([](auto& w) { w.integer(-1); }), std::string("\x80\x02J\xff\xff\xff\xff.", 8));
  EXPECT_EQ(one([](auto& w) { w.integer(int64_t{1} << 40); }),
            std::string("\x80\x02\x8a\x06\x00\x00\x00\x00\x00\x01.", 11));
  EXPECT_EQ(one([](auto& w) { w.real(0.1); }),
            std::string("\x80\x02G\x3f\xb9\x99\x99\x99\x99\x99\x9a.", 12));
  EXPECT_EQ(one([](auto& w) { w.str("hi"); }), std::string("\x80\x02X\x02\x00\x00\x00hi.", 10));
  EXPECT_EQ(one([](auto& w) { w.boolean(true); }), std::string("\x80\x02\x88.", 4));
  EXPECT_EQ(one([](auto& w) { w.none(); }), std::string("\x80\x02N.", 4));
  EXPECT_EQ(one([](auto& w) {
              pickle_plain_value(w, Value(List{1, 2}), "v");
            }),
            std::string("\x80\x02](K\x01K\x02\x65.", 10));
  EXPECT_EQ(one([](auto& w) { w.bytes("\xff"); }),
            std::string("\x80\x02\x63_codecs\nencode\nX\x02\x00\x00\x00\xc3\xbfX\x06\x00\x00\x00"
                        "latin1\x86R.",
                        39));
  EXPECT_THROW(one([](auto& w) { w.tuple_of(4); }), InvalidArgumentError);
  py::PickleWriter w;
  w.none();
  EXPECT_EQ(w.size(), 3u);
  w.finish();
  EXPECT_EQ(w.size(), 0u);
}

// ---- What Python makes of it (/usr/bin/python3: CPython, and Debian's
// python3-torch 1.13 for torch.load), through tests/dcp/writer_check.py.

// A Python expression for a plain Value.
std::string hex(std::string_view s) {
  std::string out;
  char buf[4];
  for (unsigned char c : s) {
    std::snprintf(buf, sizeof buf, "%02x", c);
    out += buf;
  }
  return out;
}

std::string py_expr(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kNone:
      return "None";
    case Value::Kind::kBool:
      return v.to_bool() ? "True" : "False";
    case Value::Kind::kInt:
      return std::to_string(v.to_int());
    case Value::Kind::kDouble: {
      const double d = v.to_double();
      return "struct.unpack('<d', bytes.fromhex('" +
             hex(std::string_view(reinterpret_cast<const char*>(&d), 8)) + "'))[0]";
    }
    case Value::Kind::kString:
      return "bytes.fromhex('" + hex(v.to_string()) + "').decode('utf-8')";
    case Value::Kind::kBytes:
      return "bytes.fromhex('" + hex(v.to_bytes().data) + "')";
    case Value::Kind::kList: {
      std::string s = "[";
      for (const Value& x : v.list()) s += py_expr(x) + ", ";
      return s + "]";
    }
    case Value::Kind::kDict: {
      std::string s = "{";
      for (const auto& kv : v.dict())
        s += py_expr(Value(kv.first)) + ": " + py_expr(kv.second) + ", ";
      return s + "}";
    }
    default:
      ADD_FAILURE() << "py_expr of " << describe(v);
      return "None";
  }
}

// Whether CPython's protocol-2 pickle of the value, less its memo, is the
// same stream: it writes APPEND / SETITEM for one item, __builtin__.bytes
// for b'', and memo references for a str it has seen.
bool cpython_writes_the_same(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kBytes:
      return !v.to_bytes().data.empty();
    case Value::Kind::kList:
      if (v.list().size() == 1 || v.list().size() > 1000) return false;
      for (const Value& x : v.list())
        if (!cpython_writes_the_same(x) || x.kind() == Value::Kind::kString) return false;
      return true;
    case Value::Kind::kDict:
      if (v.dict().size() == 1 || v.dict().size() > 1000) return false;
      for (const auto& kv : v.dict())
        if (!cpython_writes_the_same(kv.second) || kv.second.kind() == Value::Kind::kString)
          return false;
      return true;
    default:
      return true;
  }
}

std::string python() { return "/usr/bin/python3"; }

class PythonCheck {
 public:
  PythonCheck() {
    dir_ = (fs::temp_directory_path() / "dcp_writer_check_XXXXXX").string();
    if (!::mkdtemp(dir_.data())) throw std::runtime_error("mkdtemp failed for " + dir_);
  }
  ~PythonCheck() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  void file(const std::string& name, const std::string& bytes) {
    std::ofstream(fs::path(dir_) / name, std::ios::binary) << bytes;
  }
  void line(const std::vector<std::string>& fields) {
    for (size_t i = 0; i < fields.size(); ++i) cases_ += (i ? "\t" : "") + fields[i];
    cases_ += "\n";
    ++n_;
  }
  // Runs writer_check.py; "" when every case passed, else its output.
  std::string run() {
    file("cases.txt", cases_);
    if (::access(python().c_str(), X_OK) != 0)
      return "no " + python() +
             ": these tests check what dcp++ writes with CPython and "
             "Debian's python3-torch 1.13; install them";
    const std::string cmd = python() + " '" + DCP_WRITER_CHECK_PY + "' '" + dir_ + "' 2>&1";
    std::string output;
    int rc = -1;
    if (FILE* f = ::popen(cmd.c_str(), "r")) {
      char buf[4096];
      size_t k;
      while ((k = std::fread(buf, 1, sizeof buf, f)) > 0) output.append(buf, k);
      rc = ::pclose(f);
    }
    if (rc == 0 && output == "ok " + std::to_string(n_) + "\n") return "";
    return "'" + cmd + "' (status " + std::to_string(rc) + "):\n" + output;
  }

 private:
  std::string dir_;
  std::string cases_;
  int n_ = 0;
};

std::vector<Value> int_values() {
  std::vector<Value> v;
  for (int k = 0; k < 63; ++k) {
    const int64_t p = int64_t{1} << k;
    for (int64_t x : {p - 1, p, p + 1}) {
      v.push_back(x);
      v.push_back(-x);
    }
  }
  v.push_back(INT64_MAX);
  v.push_back(INT64_MIN);
  v.push_back(INT64_MIN + 1);
  for (int64_t x : {255, 256, 65535, 65536, -128, -129, -256, -257, -32768, -32769}) v.push_back(x);
  return v;
}

std::vector<Value> float_values() {
  return {0.1,
          -0.0,
          0.0,
          -1.5,
          std::numeric_limits<double>::infinity(),
          -std::numeric_limits<double>::infinity(),
          std::numeric_limits<double>::quiet_NaN(),
          std::numeric_limits<double>::max(),
          std::numeric_limits<double>::denorm_min(),
          1e-300};
}

TEST(PickleWriterTest, CPythonLoadsEveryValue) {
  PythonCheck check;
  std::vector<Value> values = int_values();
  for (const Value& f : float_values()) values.push_back(f);
  std::string all_bytes;
  for (int c = 0; c < 256; ++c) all_bytes.push_back(static_cast<char>(c));
  for (std::string str :
       {std::string(), std::string("hi"),
        std::string("d\xc3\xa9j\xc3\xa0 \xe2\x82\xac \xf0\x9f\x98\x80"), std::string("a\0b", 3)})
    values.push_back(str);
  values.push_back(std::string(70000, 'w'));
  values.push_back(Bytes{all_bytes});
  values.push_back(Bytes{""});
  values.push_back(Bytes{std::string(1, '\0')});
  values.push_back(true);
  values.push_back(false);
  values.push_back(Value());
  values.push_back(List{});
  values.push_back(Dict{});
  values.push_back(List{1, 2.5, true});
  values.push_back(List{7});
  values.push_back(Dict{{"lr", 0.1}, {"step", 7}});
  values.push_back(Dict{{"only", Value()}});
  values.push_back(
      Dict{{"a", List{1, 2.5, "x", Value(), true, false, Dict{{"b", Bytes{"\xff\x00"}}}}},
           {"c", Dict{}},
           {"d", List{}},
           {"\xc3\xa9t\xc3\xa9", List{List{List{}}, Dict{{"e", Dict{{"f", INT64_MIN}}}}}}});
  int i = 0;
  for (const Value& v : values) {
    py::PickleWriter w;
    pickle_plain_value(w, v, "value");
    const std::string name = "v" + std::to_string(i++) + ".pkl";
    check.file(name, w.finish());
    check.line({"pickle", name, cpython_writes_the_same(v) ? "1" : "0", py_expr(v)});
  }
  // Tuples, which no Value is: (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), nested.
  for (int n = 0; n <= 5; ++n) {
    py::PickleWriter w;
    std::string expr = "(";
    if (n > 3) w.mark();
    for (int k = 1; k <= n; ++k) {
      w.integer(k);
      expr += std::to_string(k) + ",";
    }
    if (n > 3) {
      w.tuple();
    } else {
      w.tuple_of(n);
    }
    const std::string name = "t" + std::to_string(n) + ".pkl";
    check.file(name, w.finish());
    check.line({"pickle", name, "1", expr + ")"});
  }
  {
    py::PickleWriter w;
    w.integer(1);
    w.tuple_of(1);
    pickle_plain_value(w, Value(List{2, 3}), "v");
    w.tuple_of(2);
    check.file("tn.pkl", w.finish());
    check.line({"pickle", "tn.pkl", "1", "((1,), [2, 3])"});
  }
  EXPECT_EQ(check.run(), "");
}

TEST(TorchSaveWriterTest, TorchLoadsPlainValues) {
  PythonCheck check;
  const std::vector<Value> values = {
      7,
      INT64_MIN,
      0.1,
      "hi \xe2\x82\xac",
      Value(),
      true,
      Bytes{"\x00\xff"},
      List{1, 2},
      List{},
      Dict{},
      Dict{{"lr", 0.1}, {"step", 7}},
      Dict{{"a", List{1, "x", List{}}}, {"b", Dict{{"c", Value()}, {"d", false}}}},
  };
  int i = 0;
  for (const Value& v : values) {
    const std::string name = "value" + std::to_string(i++) + ".pt";
    const std::string archive = torch_save_value(v, "value");
    // Its records: data.pkl, byteorder, version.
    auto file = memory_file(archive, name);
    ZipArchive zip(file.get(), 0, archive.size(), name);
    EXPECT_EQ(zip.read(zip.get("byteorder"), true), "little");
    EXPECT_EQ(zip.read(zip.get("version"), true), "3\n");
    EXPECT_EQ(zip.records().size(), 3u);
    check.file(name, archive);
    check.line({"value", name, py_expr(v)});
  }
  int j = 0;
  for (const auto& recs : record_sets()) {
    const std::string name = "set" + std::to_string(j++) + ".zip";
    check.file(name, zip_streams(recs));
    std::string names;
    bool has_version = false;
    for (const Rec& r : recs) {
      names += (names.empty() ? "" : "|") + ("archive/" + r.name);
      has_version |= r.name == "version" || r.name == ".data/version";
    }
    if (!has_version) names += "|archive/version";
    check.line({"zip", name, names});
  }
  EXPECT_EQ(check.run(), "");
}

struct TensorSpec {
  at::Tensor t;
  bool requires_grad = false;
};

// A tensor of random bits (0/1 for bool).
at::Tensor random_tensor(at::ScalarType dtype, std::vector<int64_t> sizes, uint32_t seed) {
  at::Tensor t = at::empty(sizes, at::TensorOptions().dtype(dtype));
  std::string bits = random_bytes(t.nbytes(), seed);
  if (dtype == at::kBool)
    for (auto& c : bits) c &= 1;
  if (!bits.empty())
    std::memcpy(t.data_ptr(), bits.data(), bits.size());  // empty: data_ptr() may be null
  return t;
}

std::string tensor_bytes(const at::Tensor& t) {
  return std::string(static_cast<const char*>(t.data_ptr()), t.nbytes());
}

TEST(TorchSaveWriterTest, TorchLoadsTensorsOfEveryDtypeWeightsOnly) {
  PythonCheck check;
  const at::ScalarType dtypes[] = {at::kFloat, at::kDouble, at::kHalf,         at::kBFloat16,
                                   at::kLong,  at::kInt,    at::kShort,        at::kChar,
                                   at::kByte,  at::kBool,   at::kComplexFloat, at::kComplexDouble};
  std::vector<std::pair<at::Tensor, bool>> tensors;
  uint32_t seed = 1;
  for (at::ScalarType d : dtypes) tensors.push_back({random_tensor(d, {2, 3}, seed++), false});
  for (std::vector<int64_t> sizes :
       {std::vector<int64_t>{}, {0}, {2, 0, 3}, {1, 2, 3, 4}, {5, 1, 1, 2, 3}, {100000}})
    tensors.push_back({random_tensor(at::kFloat, sizes, seed++), false});
  tensors.push_back({random_tensor(at::kFloat, {3}, seed++), true});

  // One archive per tensor (a DCP tensor item: the root is the tensor).
  int i = 0;
  for (const auto& [t, rg] : tensors) {
    const std::string name = "tensor" + std::to_string(i++);
    py::PickleWriter w;
    pickle_tensor(w, "0", t.scalar_type(), t.sizes().vec(), rg, name);
    std::string archive;
    ZipWriter zip("archive", to_string(archive));
    zip.add("data.pkl", w.finish());
    zip.add("byteorder", std::string_view("little"));
    const std::string data = tensor_bytes(t);
    zip.begin("data/0", data.size());
    for (size_t at = 0; at < data.size(); at += 333)
      zip.append(data.data() + at, std::min<size_t>(333, data.size() - at));
    zip.end();
    zip.finish();
    check.file(name + ".pt", archive);
    check.file(name + ".bin", data);
    std::string shape = "[";
    for (int64_t s : t.sizes()) shape += (shape.size() > 1 ? "," : "") + std::to_string(s);
    check.line({"tensors", name + ".pt",
                "[{\"dtype\": \"" + std::string(dtype_name(t.scalar_type())) +
                    "\", \"shape\": " + shape + "], \"requires_grad\": " + (rg ? "true" : "false") +
                    ", \"bin\": \"" + name + ".bin\"}]",
                "'<tensor 0>'"});
  }

  // A whole state dict (what ckpt convert --to torch writes): storages "0",
  // "1", ... in first-use order, records data/0, data/1, ... after data.pkl.
  {
    const at::Tensor b = random_tensor(at::kBFloat16, {4}, 77);
    const at::Tensor wt = random_tensor(at::kFloat, {4, 3}, 78);
    const at::Tensor m = random_tensor(at::kLong, {2}, 79);
    py::PickleWriter w;
    w.empty_dict();
    w.mark();
    w.str("model");
    w.empty_dict();
    w.mark();
    w.str("b");
    pickle_tensor(w, "0", b.scalar_type(), b.sizes().vec(), false, "b");
    w.str("w");
    pickle_tensor(w, "1", wt.scalar_type(), wt.sizes().vec(), true, "w");
    w.setitems();
    w.str("optim");
    w.empty_list();
    w.mark();
    pickle_tensor(w, "2", m.scalar_type(), m.sizes().vec(), false, "m");
    w.integer(3);
    w.appends();
    w.str("step");
    w.integer(7);
    w.setitems();
    std::string archive;
    ZipWriter zip("archive", to_string(archive));
    zip.add("data.pkl", w.finish());
    zip.add("byteorder", std::string_view("little"));
    int k = 0;
    std::string specs = "[";
    for (const auto& [t, rg] : {std::pair<at::Tensor, bool>{b, false}, {wt, true}, {m, false}}) {
      const std::string key = std::to_string(k++);
      zip.add("data/" + key, tensor_bytes(t));
      check.file("sd" + key + ".bin", tensor_bytes(t));
      std::string shape = "[";
      for (int64_t s : t.sizes()) shape += (shape.size() > 1 ? "," : "") + std::to_string(s);
      specs += std::string(k > 1 ? ", " : "") + "{\"dtype\": \"" + dtype_name(t.scalar_type()) +
               "\", \"shape\": " + shape + "], \"requires_grad\": " + (rg ? "true" : "false") +
               ", \"bin\": \"sd" + key + ".bin\"}";
    }
    zip.finish();
    check.file("sd.pt", archive);
    check.line({"tensors", "sd.pt", specs + "]",
                "{'model': {'b': '<tensor 0>', 'w': '<tensor 1>'}, 'optim': ['<tensor 2>', 3], "
                "'step': 7}"});
  }
  EXPECT_EQ(check.run(), "");
}

}  // namespace
}  // namespace internal
}  // namespace dcp
