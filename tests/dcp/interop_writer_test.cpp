// The writer-side primitives (dcp/src/interop/{zip_writer,pickle_writer,
// torch_save_writer}.h): ZipWriter's archives compared byte for byte with
// what LibTorch's own PyTorchStreamWriter writes for the same records
// (whole and streamed in odd pieces, including the ZIP64 cases at 4 GiB),
// read back by ZipArchive, and the refusals.
#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "dcp/error.h"
#include "interop/pickle_writer.h"
#include "interop/torch_save_writer.h"
#include "interop/zip.h"
#include "interop/zip_writer.h"

namespace dcp {
namespace internal {
namespace {

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

}  // namespace
}  // namespace internal
}  // namespace dcp
