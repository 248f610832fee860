// Damaged and hostile PyTorch checkpoints: each is a dcp::Error that names
// the file, the key or record and the offset; nothing crashes, nothing
// named by a pickle is executed. The checkpoints are real PyTorch output
// (tests/interop/py), damaged here.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdlib>
#include <filesystem>

#include "common/python_fixtures.h"
#include "common/test_util.h"
#include "dcp/dcp.h"

namespace dcp {
namespace {

namespace fsys = std::filesystem;

// A fresh copy of fixture `kind`'s checkpoint (shared_python_fixture's).
std::string copy_of(const std::string& kind, const testing::TempDir& into) {
  const std::string from =
      testing::load_fixture_manifest(testing::shared_python_fixture(kind)).main().path;
  const std::string to = into.sub(fsys::path(from).filename().string());
  fsys::copy(from, to, fsys::copy_options::recursive);
  return to;
}

// The message of the error load_all(path) throws (a failure if none).
std::string load_error(const std::string& path) {
  try {
    LoadOptions lo;
    lo.checkpoint_id = path;
    lo.skip_unreadable_values = true;
    load_all(lo);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "'" << path << "' loaded";
  return "";
}

void expect_has(const std::string& msg, const std::vector<std::string>& parts) {
  for (const auto& p : parts)
    EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' in: " << msg;
}

TEST(PyTorchBadInput, ATruncatedMetadataNamesTheFileAndTheOffset) {
  testing::TempDir d;
  const std::string ck = copy_of("dcp113_1rank_per_rank", d);
  const std::string md = testing::read_file(ck + "/.metadata");
  for (size_t cut :
       {size_t{0}, size_t{1}, size_t{2}, md.size() / 3, md.size() / 2, md.size() - 1}) {
    testing::write_file(ck + "/.metadata", md.substr(0, cut));
    const std::string msg = load_error(ck);
    expect_has(msg, {ck + "/.metadata"});
    if (cut > 2) expect_has(msg, {"at byte"});
  }
}

TEST(PyTorchBadInput, EveryCorruptByteOfTheMetadataIsAnErrorOrLoads) {
  testing::TempDir d;
  const std::string ck = copy_of("dcp2_flavour", d);
  const std::string md = testing::read_file(ck + "/.metadata");
  for (size_t i = 0; i < md.size(); i += 7) {
    std::string bad = md;
    bad[i] = static_cast<char>(bad[i] ^ 0x5a);
    testing::write_file(ck + "/.metadata", bad);
    try {
      LoadOptions lo;
      lo.checkpoint_id = ck;
      lo.skip_unreadable_values = true;
      load_all(lo);
    } catch (const Error&) {
      // A clean error; anything else fails the test (or crashes it).
    }
  }
}

TEST(PyTorchBadInput, ADisallowedGlobalIsRefusedByNameNeverCalled) {
  testing::TempDir d;
  const std::string ck = copy_of("dcp113_1rank_per_rank", d);
  const std::string marker = d.sub("executed");
  // PROTO 2; GLOBAL os system; the argument; TUPLE1; REDUCE; STOP.
  const std::string cmd = "touch " + marker;
  std::string p =
      "\x80\x02"
      "cos\nsystem\n"
      "X";
  const uint32_t n = static_cast<uint32_t>(cmd.size());
  p.append(reinterpret_cast<const char*>(&n), 4);
  p += cmd + "\x85R.";
  testing::write_file(ck + "/.metadata", p);
  expect_has(load_error(ck), {"disallowed global 'os.system'", "at byte 2", ck + "/.metadata"});
  EXPECT_FALSE(fsys::exists(marker));
  // The same as a torch.save file's data.pkl (a valid archive: CRCs right).
  const std::string pt = d.sub("evil.pt");
  testing::write_file(d.sub("pkl"), p);
  const std::string py =
      "import sys, zipfile\n"
      "with zipfile.ZipFile(sys.argv[1], 'w') as z:\n"
      "    z.writestr('archive/data.pkl', open(sys.argv[2], 'rb').read())\n"
      "    z.writestr('archive/version', '3\\n')\n";
  testing::write_file(d.sub("evil.py"), py);
  ASSERT_EQ(
      std::system(("/usr/bin/python3 " + d.sub("evil.py") + " " + pt + " " + d.sub("pkl")).c_str()),
      0);
  expect_has(load_error(pt), {"disallowed global 'os.system'", "data.pkl", pt});
  EXPECT_FALSE(fsys::exists(marker));
}

TEST(PyTorchBadInput, AnItemPastTheEndOfItsFileNamesTheItemAndTheRange) {
  testing::TempDir d;
  const std::string ck = copy_of("dcp113_1rank_per_rank", d);
  const std::string data = ck + "/__0_0.distcp";
  fsys::resize_file(data, fsys::file_size(data) / 2);
  expect_has(load_error(ck), {"runs past the end of the file", "__0_0.distcp", "bytes ["});
}

// Flips one byte of a tensor's stored elements, found by its expected bytes.
void corrupt_tensor_bytes(const std::string& file, const at::Tensor& expected) {
  std::string bytes = testing::read_file(file);
  const at::Tensor c = expected.contiguous();
  const std::string want(static_cast<const char*>(c.data_ptr()), c.nbytes());
  const size_t at = bytes.find(want);
  ASSERT_NE(at, std::string::npos) << "the tensor's bytes are not in " << file;
  bytes[at + want.size() / 2] = static_cast<char>(bytes[at + want.size() / 2] ^ 1);
  testing::write_file(file, bytes);
}

TEST(PyTorchBadInput, ACrcMismatchNamesTheRecordAndTheFile) {
  for (auto [kind, key] : {std::pair<const char*, const char*>{"dcp113_1rank_per_rank", "t_int64"},
                           {"torchsave_model", "fc1.weight"}}) {
    testing::TempDir d;
    const std::string ck = copy_of(kind, d);
    const auto manifest = testing::load_fixture_manifest(testing::shared_python_fixture(kind));
    const testing::ExpectedLeaf* big = &manifest.main().leaf(key);
    const std::string file = fsys::is_directory(ck) ? ck + "/__0_0.distcp" : ck;
    corrupt_tensor_bytes(file, big->tensor);
    expect_has(load_error(ck), {"CRC-32 mismatch", big->key, file});
    // With checksums off the load goes through (the bytes are what they are).
    FileSystemReaderOptions ro;
    ro.verify_checksums = false;
    LoadOptions lo;
    lo.storage_reader = make_filesystem_reader(ck, ro);
    lo.skip_unreadable_values = true;
    EXPECT_NO_THROW(load_all(lo)) << kind;
  }
}

TEST(PyTorchBadInput, ACompressedRecordIsRefusedNamingIt) {
  testing::TempDir d;
  const std::string pt = copy_of("torchsave_model", d);
  const std::string deflated = d.sub("deflated.pt");
  const std::string py =
      "import sys, zipfile\n"
      "src = zipfile.ZipFile(sys.argv[1])\n"
      "with zipfile.ZipFile(sys.argv[2], 'w', zipfile.ZIP_DEFLATED) as out:\n"
      "    for i in src.infolist(): out.writestr(i.filename, src.read(i.filename))\n";
  testing::write_file(d.sub("deflate.py"), py);
  ASSERT_EQ(
      std::system(("/usr/bin/python3 " + d.sub("deflate.py") + " " + pt + " " + deflated).c_str()),
      0);
  expect_has(load_error(deflated), {"compressed", deflated});
}

TEST(PyTorchBadInput, AFileOfNoKnownFormatSaysWhatItIsNot) {
  testing::TempDir d;
  testing::write_file(d.sub("notes.txt"), "hello");
  expect_has(load_error(d.sub("notes.txt")), {"neither a torch.save archive", "notes.txt"});
}

}  // namespace
}  // namespace dcp
