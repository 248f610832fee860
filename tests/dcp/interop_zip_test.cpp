// The zip reader of torch.save archives (dcp/src/interop/zip.h) over the
// archives LibTorch (pickle_save, in process) and Python torch.save (run at
// test time with Debian's python3-torch) write, over archives built here to
// reach the paths those writers never take (ZIP64 extra fields, comments,
// deflate), and over damaged copies of them: every failure is a
// CorruptionError naming the archive, the record and the offset.
#include "interop/zip.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "dcp/env.h"
#include "dcp/error.h"

namespace dcp {
namespace internal {
namespace {

constexpr const char kPython[] = "/usr/bin/python3";

std::string make_temp_dir() {
  char tmpl[] = "/tmp/dcp_zip_test.XXXXXX";
  const char* d = mkdtemp(tmpl);
  if (!d) throw std::runtime_error("mkdtemp failed");
  return d;
}

class TempDir {
 public:
  TempDir() : path_(make_temp_dir()) {}
  ~TempDir() { posix_env()->remove_dir_recursively(path_); }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

bool have_python_torch() {
  static const bool have =
      std::system((std::string(kPython) + " -c 'import torch' >/dev/null 2>&1").c_str()) == 0;
  return have;
}

// Runs `code` with Debian's python3 (the one with torch 1.13).
void run_python(const TempDir& dir, const std::string& code) {
  const std::string script = dir.file("script.py");
  posix_env()->write_file(script, code, false);
  const std::string cmd = std::string(kPython) + " " + script;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << code;
}

std::string pickle_save_bytes(const at::Tensor& t) {
  const std::vector<char> v = torch::jit::pickle_save(t);
  return std::string(v.begin(), v.end());
}

std::string tensor_bytes(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.nbytes());
}

uint32_t crc_of(const std::string& s) { return crc32(0, s.data(), s.size()); }

// Expects `f` to throw a CorruptionError whose message has every one of `parts`.
template <typename F>
void expect_corruption(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no CorruptionError; expected one with '" << parts.front() << "'";
  } catch (const CorruptionError& e) {
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "'" << p << "' not in: " << e.what();
  }
}

void put16(std::string& s, uint16_t v) {
  s.push_back(static_cast<char>(v & 0xff));
  s.push_back(static_cast<char>(v >> 8));
}
void put32(std::string& s, uint32_t v) {
  put16(s, static_cast<uint16_t>(v & 0xffff));
  put16(s, static_cast<uint16_t>(v >> 16));
}
void put64(std::string& s, uint64_t v) {
  put32(s, static_cast<uint32_t>(v));
  put32(s, static_cast<uint32_t>(v >> 32));
}
uint32_t get32(const std::string& s, size_t at) {
  uint32_t v;
  std::memcpy(&v, s.data() + at, 4);
  return v;
}
void set32(std::string& s, size_t at, uint32_t v) { std::memcpy(&s[at], &v, 4); }

struct Entry {
  std::string name;
  std::string data;
};

struct ZipOptions {
  bool zip64_extras = false;  // every central directory size and offset in a ZIP64 extra field
  bool zip64_end = false;     // a ZIP64 end of central directory record and locator
  std::string comment;
};

// A stored zip archive, as APPNOTE.TXT describes (no data descriptors).
std::string make_zip(const std::vector<Entry>& entries, const ZipOptions& o = {}) {
  std::string z, cd;
  for (const auto& e : entries) {
    const uint64_t lho = z.size();
    const uint32_t crc = crc_of(e.data);
    put32(z, 0x04034b50);
    put16(z, 45);
    put16(z, 0x0800);
    put16(z, 0);
    put16(z, 0);
    put16(z, 0x21);
    put32(z, crc);
    put32(z, static_cast<uint32_t>(e.data.size()));
    put32(z, static_cast<uint32_t>(e.data.size()));
    put16(z, static_cast<uint16_t>(e.name.size()));
    put16(z, 0);
    z += e.name;
    z += e.data;
    put32(cd, 0x02014b50);
    put16(cd, 0x031e);
    put16(cd, 45);
    put16(cd, 0x0800);
    put16(cd, 0);
    put16(cd, 0);
    put16(cd, 0x21);
    put32(cd, crc);
    put32(cd, o.zip64_extras ? 0xffffffff : static_cast<uint32_t>(e.data.size()));
    put32(cd, o.zip64_extras ? 0xffffffff : static_cast<uint32_t>(e.data.size()));
    put16(cd, static_cast<uint16_t>(e.name.size()));
    put16(cd, o.zip64_extras ? 4 + 24 : 0);
    put16(cd, 0);
    put16(cd, 0);
    put16(cd, 0);
    put32(cd, 0);
    put32(cd, o.zip64_extras ? 0xffffffff : static_cast<uint32_t>(lho));
    cd += e.name;
    if (o.zip64_extras) {
      put16(cd, 0x0001);
      put16(cd, 24);
      put64(cd, e.data.size());
      put64(cd, e.data.size());
      put64(cd, lho);
    }
  }
  const uint64_t cd_offset = z.size();
  z += cd;
  if (o.zip64_end) {
    const uint64_t z64 = z.size();
    put32(z, 0x06064b50);
    put64(z, 44);
    put16(z, 0x031e);
    put16(z, 45);
    put32(z, 0);
    put32(z, 0);
    put64(z, entries.size());
    put64(z, entries.size());
    put64(z, cd.size());
    put64(z, cd_offset);
    put32(z, 0x07064b50);
    put32(z, 0);
    put64(z, z64);
    put32(z, 1);
  }
  put32(z, 0x06054b50);
  put16(z, 0);
  put16(z, 0);
  put16(z, o.zip64_end ? 0xffff : static_cast<uint16_t>(entries.size()));
  put16(z, o.zip64_end ? 0xffff : static_cast<uint16_t>(entries.size()));
  put32(z, o.zip64_end ? 0xffffffff : static_cast<uint32_t>(cd.size()));
  put32(z, o.zip64_end ? 0xffffffff : static_cast<uint32_t>(cd_offset));
  put16(z, static_cast<uint16_t>(o.comment.size()));
  z += o.comment;
  return z;
}

// The offset of the central directory entry of `name` in `zip`.
size_t cd_entry(const std::string& zip, const std::string& name) {
  for (size_t at = zip.find("PK\1\2"); at != std::string::npos; at = zip.find("PK\1\2", at + 1))
    if (zip.compare(at + 46, name.size(), name) == 0 &&
        static_cast<uint8_t>(zip[at + 28]) + (static_cast<uint8_t>(zip[at + 29]) << 8) ==
            name.size())
      return at;
  throw std::runtime_error("no central directory entry '" + name + "'");
}

struct Opened {
  std::unique_ptr<RandomAccessFile> file;
  std::unique_ptr<ZipArchive> zip;
};

Opened open_bytes(std::string bytes, const std::string& display = "'mem.pt'") {
  Opened o;
  const uint64_t n = bytes.size();
  o.file = memory_file(std::move(bytes), "mem.pt");
  o.zip = std::make_unique<ZipArchive>(o.file.get(), 0, n, display);
  return o;
}

TEST(InteropZipTest, Crc32IsZipsCrc) {
  EXPECT_EQ(crc32(0, "123456789", 9), 0xcbf43926u);  // the CRC-32 check value
  EXPECT_EQ(crc32(crc32(0, "1234", 4), "56789", 5), 0xcbf43926u);
  EXPECT_EQ(crc32(0, "", 0), 0u);
}

TEST(InteropZipTest, MemoryFileReadsItsBytes) {
  auto f = memory_file("hello", "m");
  EXPECT_EQ(f->size(), 5u);
  EXPECT_EQ(f->path(), "m");
  char buf[8] = {};
  EXPECT_EQ(f->read(1, 8, buf), 4u);
  EXPECT_EQ(std::string(buf, 4), "ello");
  EXPECT_EQ(f->read(5, 1, buf), 0u);
  EXPECT_EQ(f->read(99, 1, buf), 0u);
}

// What LibTorch 1.13's pickle_save writes (interop.md section 2.1).
TEST(InteropZipTest, ReadsLibTorchPickleSave) {
  const at::Tensor t = torch::arange(6, torch::kFloat32).reshape({2, 3});
  const std::string bytes = pickle_save_bytes(t);
  auto o = open_bytes(bytes);
  const ZipArchive& zip = *o.zip;
  EXPECT_EQ(zip.prefix(), "archive");
  std::vector<std::string> names;
  for (const auto& r : zip.records()) {
    names.push_back(r.name);
    EXPECT_EQ(r.method, 0) << r.name;
    EXPECT_EQ(r.flags, 0x0808) << r.name;  // data descriptors, UTF-8 names
    EXPECT_EQ(r.data_offset % 64, 0u) << r.name;
    EXPECT_EQ(r.compressed_size, r.size);
  }
  EXPECT_EQ(names,
            (std::vector<std::string>{"archive/data/0", "archive/data.pkl", "archive/version"}));
  // A ZIP64 end of central directory record and its locator before the end record.
  const size_t end = bytes.size() - 22;
  EXPECT_EQ(get32(bytes, end), 0x06054b50u);
  EXPECT_EQ(get32(bytes, end - 20), 0x07064b50u);
  EXPECT_EQ(get32(bytes, end - 20 - 56), 0x06064b50u);

  const ZipRecord& data = zip.get("data/0");
  EXPECT_EQ(&data, zip.find("data/0"));
  EXPECT_EQ(zip.data_offset(data), data.data_offset);
  EXPECT_EQ(zip.read(data, true), tensor_bytes(t));
  EXPECT_EQ(zip.read(zip.get("version"), true), "3\n");
  EXPECT_NE(zip.read(zip.get("data.pkl"), true).find("_rebuild_tensor_v2"), std::string::npos);
  EXPECT_EQ(zip.find("archive/data/0"), nullptr);  // names are relative to the prefix
  EXPECT_EQ(zip.find("data/1"), nullptr);
  expect_corruption([&] { zip.get("data/1"); }, {"'mem.pt'", "archive/data/1"});
  zip.check_crc(data, crc_of(tensor_bytes(t)));
}

TEST(InteropZipTest, ReadsLibTorchPickleSaveOfEveryDtype) {
  for (auto dtype : {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16, at::kLong, at::kInt,
                     at::kShort, at::kChar, at::kByte, at::kBool, at::kComplexFloat}) {
    const at::Tensor t = torch::ones({3, 5}, dtype);
    auto o = open_bytes(pickle_save_bytes(t));
    EXPECT_EQ(o.zip->read(o.zip->get("data/0"), true), tensor_bytes(t)) << dtype;
  }
  // An empty tensor has an empty storage record.
  auto o = open_bytes(pickle_save_bytes(torch::ones({0, 4})));
  EXPECT_EQ(o.zip->get("data/0").size, 0u);
  EXPECT_EQ(o.zip->read(o.zip->get("data/0"), true), "");
}

TEST(InteropZipTest, ReadsPythonTorchSave) {
  if (!have_python_torch()) GTEST_SKIP() << kPython << " has no torch";
  TempDir dir;
  run_python(dir,
             "import torch\n"
             "torch.save({'a': torch.arange(6, dtype=torch.float32),\n"
             "            'b': torch.ones(2, 2, dtype=torch.float64),\n"
             "            'c': torch.tensor([1, 2], dtype=torch.int8)},\n"
             "           '" +
                 dir.file("model.pt") + "')\n");
  const std::string path = dir.file("model.pt");
  auto file = posix_env()->new_random_access_file(path);
  ZipArchive zip(file.get(), 0, file->size(), "'" + path + "'");
  // Python names the prefix after the file's stem.
  EXPECT_EQ(zip.prefix(), "model");
  std::vector<std::string> names;
  for (const auto& r : zip.records()) {
    names.push_back(r.name);
    EXPECT_EQ(r.method, 0);
    EXPECT_EQ(r.data_offset % 64, 0u) << r.name;
    zip.read(r, true);  // every CRC is right
  }
  EXPECT_EQ(names.front(), "model/data.pkl");
  EXPECT_NE(zip.find("version"), nullptr);
  EXPECT_EQ(zip.read(zip.get("data/0"), true), tensor_bytes(torch::arange(6, torch::kFloat32)));
  EXPECT_EQ(zip.read(zip.get("data/1"), true), tensor_bytes(torch::ones({2, 2}, torch::kFloat64)));
  EXPECT_EQ(zip.read(zip.get("data/2"), false), std::string("\x01\x02", 2));
}

// A DCP item: a whole torch.save archive at some offset of a .distcp file,
// its offsets relative to its own start.
TEST(InteropZipTest, ReadsAnArchiveEmbeddedInABiggerFile) {
  const at::Tensor a = torch::arange(10, torch::kInt64);
  const at::Tensor b = torch::full({4, 4}, 2.5, torch::kFloat32);
  const std::string za = pickle_save_bytes(a), zb = pickle_save_bytes(b);
  std::string file_bytes = std::string(100, 'x') + za + std::string(7, '\0') + zb + "trailer";
  const uint64_t a_at = 100, b_at = 100 + za.size() + 7;
  auto f = memory_file(file_bytes, "/ck/__0_0.distcp");
  ZipArchive ka(f.get(), a_at, za.size(), "'/ck/__0_0.distcp' bytes [100, ...)");
  ZipArchive kb(f.get(), b_at, zb.size(), "'/ck/__0_0.distcp' bytes [b, ...)");
  EXPECT_EQ(ka.read(ka.get("data/0"), true), tensor_bytes(a));
  EXPECT_EQ(kb.read(kb.get("data/0"), true), tensor_bytes(b));
  EXPECT_EQ(ka.data_offset(ka.get("data/0")), a_at + ka.get("data/0").data_offset);
  EXPECT_EQ(ka.base(), a_at);
  EXPECT_EQ(ka.length(), za.size());

  // A range that does not hold the archive exactly.
  EXPECT_THROW(ZipArchive(f.get(), a_at, za.size() + 1, "'x'"), CorruptionError);
  EXPECT_THROW(ZipArchive(f.get(), a_at + 1, za.size() - 1, "'x'"), CorruptionError);
  expect_corruption([&] { ZipArchive(f.get(), b_at, file_bytes.size(), "'big'"); },
                    {"'big'", "extends beyond the end of '/ck/__0_0.distcp'"});

  // Python's torch.save into a stream, embedded the same way.
  if (!have_python_torch()) return;
  TempDir dir;
  run_python(dir,
             "import torch, io\n"
             "b = io.BytesIO()\n"
             "torch.save(torch.arange(5, dtype=torch.int32), b)\n"
             "open('" +
                 dir.file("item.distcp") +
                 "', 'wb').write(b'J' * 333 + "
                 "b.getvalue() + b'tail')\n");
  auto pf = posix_env()->new_random_access_file(dir.file("item.distcp"));
  ZipArchive kp(pf.get(), 333, pf->size() - 333 - 4, "'item.distcp' bytes [333, ...)");
  EXPECT_EQ(kp.prefix(), "archive");
  EXPECT_EQ(kp.read(kp.get("data/0"), true), tensor_bytes(torch::arange(5, torch::kInt32)));
}

TEST(InteropZipTest, ReadsZip64ExtraFieldsAndEndRecords) {
  const std::vector<Entry> entries = {
      {"arch/data.pkl", "pickle"}, {"arch/data/0", "0123456789"}, {"arch/version", "3\n"}};
  for (bool extras : {false, true})
    for (bool end64 : {false, true}) {
      ZipOptions o;
      o.zip64_extras = extras;
      o.zip64_end = end64;
      const std::string bytes = make_zip(entries, o);
      auto z = open_bytes(bytes);
      ASSERT_EQ(z.zip->records().size(), 3u);
      EXPECT_EQ(z.zip->prefix(), "arch");
      EXPECT_EQ(z.zip->read(z.zip->get("data/0"), true), "0123456789");
      EXPECT_EQ(z.zip->get("version").size, 2u);
      if (extras && end64 && have_python_torch()) {  // a reference reader agrees
        TempDir dir;
        posix_env()->write_file(dir.file("z.zip"), bytes, false);
        run_python(dir, "import zipfile\nz = zipfile.ZipFile('" + dir.file("z.zip") +
                            "')\nassert z.testzip() is None\n"
                            "assert z.read('arch/data/0') == b'0123456789'\n");
      }
    }
  // A ZIP64 field missing from the extra field.
  std::string bytes = make_zip(entries, {true, true, ""});
  const size_t e = cd_entry(bytes, "arch/data/0");
  bytes[e + 46 + 11] = 'X';  // the 0x0001 id of its extra field: now 0x5858
  bytes[e + 46 + 12] = 'X';
  expect_corruption(
      [&] { open_bytes(bytes); },
      {"record 'arch/data/0'", "'mem.pt'", "ZIP64 extra field", "offset " + std::to_string(e)});
}

TEST(InteropZipTest, FindsTheEndRecordBehindAComment) {
  const std::vector<Entry> entries = {{"a/data.pkl", "p"}, {"a/data/0", "xyz"}};
  for (size_t n : {size_t{1}, size_t{100}, size_t{5000}, size_t{65535}}) {
    ZipOptions o;
    o.zip64_end = n % 2 == 0;
    o.comment = std::string(n, 'c');
    // A decoy: an end record signature inside the comment.
    if (n > 30) o.comment.replace(3, 4, "PK\5\6");
    auto z = open_bytes(make_zip(entries, o));
    EXPECT_EQ(z.zip->read(z.zip->get("data/0"), true), "xyz");
  }
}

TEST(InteropZipTest, RefusesCompressedRecordsClearly) {
  if (!have_python_torch()) GTEST_SKIP() << kPython << " has no torch";
  TempDir dir;
  const std::string path = dir.file("deflated.pt");
  run_python(dir,
             "import zipfile\n"
             "with zipfile.ZipFile('" +
                 path +
                 "', 'w', zipfile.ZIP_DEFLATED) as z:\n"
                 "    z.writestr('archive/data.pkl', b'p' * 1000)\n"
                 "    z.writestr('archive/data/0', b'\\0' * 4096)\n");
  auto file = posix_env()->new_random_access_file(path);
  ZipArchive zip(file.get(), 0, file->size(), "'" + path + "'");
  const ZipRecord& r = zip.get("data/0");
  EXPECT_EQ(r.method, 8);
  EXPECT_EQ(r.size, 4096u);
  EXPECT_LT(r.compressed_size, 4096u);
  for (auto f : {+[](const ZipArchive&z, const ZipRecord&r) { z.data_offset(r); },
                 +[](const ZipArchive&z, const ZipRecord&r) { z.read(r, true); }})
    expect_corruption([&] { f(zip, r); }, {"record 'archive/data/0'", path, "compressed", "deflate",
                                           "torch.save stores every record uncompressed",
                                           "offset " + std::to_string(r.header_offset)});
}

TEST(InteropZipTest, DetectsACrcMismatch) {
  const at::Tensor t = torch::arange(16, torch::kFloat32);
  std::string bytes = pickle_save_bytes(t);
  uint64_t at;
  {
    auto o = open_bytes(bytes);
    at = o.zip->get("data/0").data_offset;
  }
  bytes[at + 5] ^= 0x10;
  auto o = open_bytes(bytes, "'/ck/m.pt'");
  const ZipRecord& r = o.zip->get("data/0");
  const std::string got = o.zip->read(r, false);  // unchecked: the damaged bytes
  EXPECT_EQ(got.size(), t.nbytes());
  char stored[16], computed[16];
  std::snprintf(stored, sizeof stored, "0x%08x", r.crc32);
  std::snprintf(computed, sizeof computed, "0x%08x", crc_of(got));
  const std::string expected =
      "CRC-32 mismatch in record 'archive/data/0' of '/ck/m.pt' at offset " + std::to_string(at) +
      ": stored " + stored + ", computed " + computed;
  try {
    o.zip->read(r, true);
    ADD_FAILURE() << "no CRC error";
  } catch (const CorruptionError& e) {
    EXPECT_EQ(e.what(), expected);
  }
  expect_corruption([&] { o.zip->check_crc(r, crc_of(got)); }, {expected});
}

// Every prefix of an archive, and every archive range that runs past the
// file: a CorruptionError, never a crash or another exception.
TEST(InteropZipTest, TruncationAtEveryPositionIsACorruptionError) {
  std::vector<std::string> archives = {
      pickle_save_bytes(torch::ones({3, 3})),
      make_zip({{"a/data.pkl", "p"}, {"a/data/0", "12345678"}}, {true, true, "comment"})};
  for (const auto& bytes : archives)
    for (size_t n = 0; n < bytes.size(); ++n) {
      SCOPED_TRACE(n);
      expect_corruption([&] { open_bytes(bytes.substr(0, n), "'cut.pt'"); }, {"'cut.pt'"});
      // The range claims the whole archive; the file ends early.
      auto f = memory_file(bytes.substr(0, n), "cut.pt");
      expect_corruption([&] { ZipArchive(f.get(), 0, bytes.size(), "'cut.pt'"); },
                        {"'cut.pt'", "extends beyond the end of 'cut.pt'"});
    }
}

// The file shrinks after the archive was opened: the reads say so.
TEST(InteropZipTest, AFileThatShrinksUnderAnOpenArchive) {
  class Shrinking : public RandomAccessFile {
   public:
    explicit Shrinking(std::string b) : b_(std::move(b)) {}
    size_t read(uint64_t off, size_t n, void* dst) const override {
      const uint64_t end = cut_ ? cut_ : b_.size();
      if (off >= end) return 0;
      n = std::min<uint64_t>(n, end - off);
      std::memcpy(dst, b_.data() + off, n);
      return n;
    }
    uint64_t size() const override { return b_.size(); }
    const std::string& path() const override { return path_; }
    uint64_t cut_ = 0;

   private:
    std::string b_, path_ = "shrinking.pt";
  };
  Shrinking f(pickle_save_bytes(torch::ones({8})));
  ZipArchive zip(&f, 0, f.size(), "'shrinking.pt'");
  const ZipRecord& r = zip.get("data/0");
  f.cut_ = r.data_offset + 3;
  expect_corruption([&] { zip.read(r, true); },
                    {"record 'archive/data/0'", "'shrinking.pt'", "truncated",
                     "offset " + std::to_string(r.data_offset)});
}

// Each byte of the archive's structure set to other values: the archive
// opens (and its records read, CRC-checked), or a CorruptionError.
TEST(InteropZipTest, DamagedBytesAreCorruptionErrorsOrHarmless) {
  const std::vector<std::string> archives = {
      pickle_save_bytes(torch::ones({2, 2})),
      make_zip({{"a/data.pkl", "p"}, {"a/data/0", "12345678"}}, {true, true, ""})};
  for (const auto& original : archives)
    for (size_t i = 0; i < original.size(); ++i)
      for (uint8_t v : {0x00, 0xff, 0x7f, 0x01}) {
        std::string bytes = original;
        if (static_cast<uint8_t>(bytes[i]) == v) continue;
        bytes[i] = static_cast<char>(v);
        try {
          auto o = open_bytes(bytes);
          for (const auto& r : o.zip->records()) o.zip->read(r, true);
        } catch (const CorruptionError&) {
        } catch (const std::exception& e) {
          ADD_FAILURE() << "byte " << i << " = " << int(v)
                        << ": not a CorruptionError: " << e.what();
        }
      }
}

TEST(InteropZipTest, LyingSizesAreCaught) {
  const std::string original = pickle_save_bytes(torch::arange(32, torch::kFloat32));
  const size_t e = cd_entry(original, "archive/data/0");
  ASSERT_EQ(get32(original, e + 24), 128u);  // LibTorch's sizes are in the fixed fields

  // Larger: the data runs into the next record.
  std::string bytes = original;
  set32(bytes, e + 20, 200);
  set32(bytes, e + 24, 200);
  expect_corruption([&] { open_bytes(bytes); },
                    {"record 'archive/data/0'", "'mem.pt'", "runs into record 'archive/data.pkl'"});
  // Much larger: past the central directory.
  set32(bytes, e + 20, 0x7fffffff);
  set32(bytes, e + 24, 0x7fffffff);
  expect_corruption([&] { open_bytes(bytes); },
                    {"record 'archive/data/0'", "does not end before the central directory"});
  // Sizes that disagree for a stored record.
  bytes = original;
  set32(bytes, e + 20, 64);
  expect_corruption([&] { open_bytes(bytes); },
                    {"record 'archive/data/0'", "compressed size 64 differs from its size 128",
                     "offset " + std::to_string(e)});
  // Smaller: the record reads, its CRC does not match.
  bytes = original;
  set32(bytes, e + 20, 64);
  set32(bytes, e + 24, 64);
  {
    auto o = open_bytes(bytes);
    EXPECT_EQ(o.zip->read(o.zip->get("data/0"), false).size(), 64u);
    expect_corruption([&] { o.zip->read(o.zip->get("data/0"), true); }, {"CRC-32 mismatch"});
  }
  // A local header offset that points elsewhere.
  bytes = original;
  set32(bytes, e + 42, get32(bytes, e + 42) + 1);
  expect_corruption([&] { open_bytes(bytes); },
                    {"record 'archive/data/0'", "local header signature"});
  // The central directory's size in the end records.
  bytes = original;
  const size_t end = bytes.size() - 22;
  set32(bytes, end - 20 - 56 + 40, 12);  // ZIP64 record: central directory size
  expect_corruption([&] { open_bytes(bytes); }, {"central directory", "'mem.pt'"});
}

TEST(InteropZipTest, NamesMustBeUniqueAndUnderOnePrefix) {
  expect_corruption(
      [&] {
        open_bytes(make_zip({{"a/data.pkl", "1"}, {"a/data.pkl", "2"}}));
      },
      {"record 'a/data.pkl'", "'mem.pt'", "appears twice"});
  expect_corruption(
      [&] {
        open_bytes(make_zip({{"a/data.pkl", "1"}, {"b/data/0", "2"}}));
      },
      {"record 'b/data/0'", "'mem.pt'", "prefix directory 'a/'"});
  expect_corruption(
      [&] {
        open_bytes(make_zip({{"a/data.pkl", "1"}, {"ab/x", "2"}}));
      },
      {"record 'ab/x'", "prefix directory 'a/'"});
  expect_corruption(
      [&] {
        open_bytes(make_zip({{"data.pkl", "1"}}));
      },
      {"record 'data.pkl'", "not in a directory"});
  expect_corruption([&] { open_bytes(make_zip({})); }, {"'mem.pt'", "no records"});
  expect_corruption([&] { open_bytes("not a zip archive at all, just some text"); },
                    {"'mem.pt'", "no zip end of central directory record"});
}

TEST(InteropZipTest, LocalHeadersMustAgreeWithTheCentralDirectory) {
  const std::string original = make_zip({{"a/data.pkl", "pickle"}, {"a/data/0", "0123"}});
  const size_t lho = original.find("PK\3\4", 1);  // the second record's local header
  std::string bytes = original;
  bytes[lho + 30] = 'b';  // its name
  expect_corruption(
      [&] { open_bytes(bytes); },
      {"record 'a/data/0'", "local header names 'b/data/0'", "offset " + std::to_string(lho)});
  bytes = original;
  bytes[lho + 14] ^= 1;  // its CRC (no data descriptor: the local header's must be right)
  expect_corruption([&] { open_bytes(bytes); }, {"record 'a/data/0'", "CRC-32"});
  bytes = original;
  bytes[lho + 8] = 8;  // its method
  expect_corruption([&] { open_bytes(bytes); }, {"record 'a/data/0'", "compression method 8"});
}

}  // namespace
}  // namespace internal
}  // namespace dcp
